//! Turning a network's logits into labelled predictions: shared by `trainer predict`
//! and the web page, so both report the same labels and probabilities.

use crate::taxonomy::CategorySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One attribute's prediction for one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributePrediction {
    pub name: String,
    /// The most probable class.
    pub label: String,
    /// Its probability.
    pub prob: f32,
    /// Every class's probability.
    pub probs: BTreeMap<String, f32>,
}

/// Softmax of one row of logits, computed stably (max subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Labels every attribute of one photo from its logits (`logits[i]` belongs to
/// attribute `i` of `category`).
///
/// # Panics
/// If the number of heads or classes disagrees with the category (a model is always
/// built from its category, so this is a programming error).
pub fn decode(category: &CategorySpec, logits: &[Vec<f32>]) -> Vec<AttributePrediction> {
    assert_eq!(
        logits.len(),
        category.attributes.len(),
        "one logit row per attribute"
    );
    category
        .attributes
        .iter()
        .zip(logits)
        .map(|(attribute, row)| {
            assert_eq!(row.len(), attribute.classes.len(), "{}", attribute.name);
            let probs = softmax(row);
            let best = argmax(&probs);
            AttributePrediction {
                name: attribute.name.clone(),
                label: attribute.classes[best].clone(),
                prob: probs[best],
                probs: attribute.classes.iter().cloned().zip(probs).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxonomy::Taxonomy;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] < 1e-6);
        let q = softmax(&[0.0, 2f32.ln()]);
        assert!((q[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn decode_names_labels_from_the_taxonomy() {
        let t = Taxonomy::meesho();
        let men = t.category("Men Tshirts").unwrap();
        let logits = vec![
            vec![0.0, 0.0, 3.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.0, 0.0, 5.0],
            vec![2.0, 2.0],
        ];
        let out = decode(men, &logits);
        let labels: Vec<&str> = out.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            ["white", "round", "printed", "typography", "short sleeves"]
        );
        assert_eq!(out[0].probs.len(), 4);
        assert!((out[4].prob - 0.5).abs() < 1e-6);
        assert!((out[0].probs.values().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
