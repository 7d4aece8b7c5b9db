//! How Hugging Face ConvNeXt checkpoint keys map onto this crate's modules.
//!
//! The modules were named after the checkpoint, so almost every key loads as it is.
//! What remains is this table: each rule rewrites one piece of a key, and applies in
//! both directions (checkpoint -> module to load, module -> checkpoint to name a
//! missing key in the checkpoint's own words). Parameter-level renames that Burn's
//! PyTorch adapter already does (LayerNorm `weight`/`bias` -> `gamma`/`beta`, and the
//! transposition of linear weights) are not repeated here.

/// One renaming rule: `checkpoint` in a checkpoint key stands for `module` in ours.
/// A piece that starts with `.` may stand anywhere in a key; any other piece only at
/// the start.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub checkpoint: &'static str,
    pub module: &'static str,
}

/// Rules for every ConvNeXt checkpoint, applied in order.
pub const BACKBONE_RULES: &[Rule] = &[
    // The transition between stages is an `nn.Sequential` there (index 0 the
    // LayerNorm, index 1 the strided convolution); ours names the two parts.
    Rule {
        checkpoint: ".downsampling_layer.0.",
        module: ".downsampling_layer.norm.",
    },
    Rule {
        checkpoint: ".downsampling_layer.1.",
        module: ".downsampling_layer.conv.",
    },
];

/// `ConvNextForImageClassification` keeps the LayerNorm applied after pooling inside
/// the backbone (`convnext.layernorm`); ours keeps it beside the backbone, next to the
/// classifier that reads it.
pub const CLASSIFIER_RULES: &[Rule] = &[Rule {
    checkpoint: "convnext.layernorm.",
    module: "layernorm.",
}];

/// Checkpoint key prefixes that a garment model does not use: the pooled LayerNorm and
/// the ImageNet classifier, replaced there by the feature layer and attribute heads.
pub const UNUSED_BY_GARMENT_MODEL: &[&str] = &["convnext.layernorm.", "classifier."];

/// The module path a checkpoint key loads into. `backbone_prefix` replaces the
/// checkpoint's `convnext.` (e.g. `backbone.` in a garment model).
pub fn to_module(key: &str, rules: &[Rule], backbone_prefix: &str) -> String {
    let mut out = key.to_string();
    for rule in rules.iter().chain(BACKBONE_RULES) {
        out = rewrite(&out, rule.checkpoint, rule.module);
    }
    match out.strip_prefix("convnext.") {
        Some(rest) => format!("{backbone_prefix}{rest}"),
        None => out,
    }
}

/// The checkpoint key that would have loaded into `path` (the inverse of [`to_module`]),
/// with Burn's LayerNorm names turned back into PyTorch's.
pub fn to_checkpoint(path: &str, rules: &[Rule], backbone_prefix: &str) -> String {
    let mut out = match path.strip_prefix(backbone_prefix) {
        Some(rest) => format!("convnext.{rest}"),
        None => path.to_string(),
    };
    for rule in BACKBONE_RULES.iter().chain(rules) {
        out = rewrite(&out, rule.module, rule.checkpoint);
    }
    if let Some(stem) = out.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = out.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        out
    }
}

/// Replaces `from` by `to` once: anywhere if `from` starts with `.`, else only as a prefix.
fn rewrite(key: &str, from: &str, to: &str) -> String {
    if from.starts_with('.') {
        key.replacen(from, to, 1)
    } else {
        match key.strip_prefix(from) {
            Some(rest) => format!("{to}{rest}"),
            None => key.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_table() {
        let cases = [
            (
                "convnext.encoder.stages.2.downsampling_layer.0.weight",
                "encoder.stages.2.downsampling_layer.norm.weight",
            ),
            (
                "convnext.encoder.stages.1.downsampling_layer.1.bias",
                "encoder.stages.1.downsampling_layer.conv.bias",
            ),
            (
                "convnext.encoder.stages.0.layers.1.pwconv1.weight",
                "encoder.stages.0.layers.1.pwconv1.weight",
            ),
            (
                "convnext.embeddings.patch_embeddings.weight",
                "embeddings.patch_embeddings.weight",
            ),
        ];
        for (hf, ours) in cases {
            let module = to_module(hf, &[], "");
            assert_eq!(module, ours);
            assert_eq!(to_checkpoint(&module, &[], ""), hf);
            let prefixed = to_module(hf, &[], "backbone.");
            assert_eq!(prefixed, format!("backbone.{ours}"));
            assert_eq!(to_checkpoint(&prefixed, &[], "backbone."), hf);
        }
    }

    #[test]
    fn classifier_keeps_its_pooled_norm_beside_the_backbone() {
        let module = to_module("convnext.layernorm.weight", CLASSIFIER_RULES, "convnext.");
        assert_eq!(module, "layernorm.weight");
        assert_eq!(
            to_module("classifier.bias", CLASSIFIER_RULES, "convnext."),
            "classifier.bias"
        );
        assert_eq!(
            to_module(
                "convnext.encoder.stages.3.layers.0.dwconv.weight",
                CLASSIFIER_RULES,
                "convnext."
            ),
            "convnext.encoder.stages.3.layers.0.dwconv.weight"
        );
        assert_eq!(
            to_checkpoint("layernorm.gamma", CLASSIFIER_RULES, "convnext."),
            "convnext.layernorm.weight"
        );
        // A LayerNorm deeper in the backbone is not the pooled one.
        assert_eq!(
            to_checkpoint(
                "convnext.embeddings.layernorm.beta",
                CLASSIFIER_RULES,
                "convnext."
            ),
            "convnext.embeddings.layernorm.bias"
        );
    }
}
