//! What `trainer export-web` writes and the page reads: one manifest (the single source
//! of truth for labels, preprocessing and network shapes) and one safetensors file of
//! weights per category.

use crate::model::{GarmentModel, GarmentModelConfig};
use crate::preprocess::PreprocessConfig;
use crate::store::{load_safetensors, LoadError, Precision};
use crate::taxonomy::{AttributeSpec, CategorySpec, Taxonomy};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// File name of the manifest inside an export directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Format tag written in every manifest; bumped when the layout changes.
pub const FORMAT: &str = "garment-tagger-web/1";

/// The manifest of an export directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Float precision of every weight file.
    pub precision: Precision,
    /// How photos are prepared for every model in this export.
    pub preprocess: PreprocessConfig,
    pub categories: Vec<ExportedCategory>,
}

/// One category's model in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedCategory {
    pub name: String,
    /// Attributes in `attr_1..attr_N` order, with their class names in output order.
    pub attributes: Vec<AttributeSpec>,
    /// The network's shape, enough to rebuild it before loading the weights.
    pub model: GarmentModelConfig,
    /// Weight file, relative to the manifest.
    pub file: String,
    /// Size of the weight file in bytes.
    pub bytes: u64,
}

/// A manifest or weight file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("category {category:?}: {source}")]
    Weights { category: String, source: LoadError },
}

impl WebManifest {
    pub fn from_json(text: &str) -> Result<Self, ExportError> {
        let manifest: WebManifest =
            serde_json::from_str(text).map_err(|e| ExportError::Manifest(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(ExportError::Manifest(format!(
                "format {:?} is not {FORMAT:?}; export the models again with this version",
                manifest.format
            )));
        }
        for c in &manifest.categories {
            let counts: Vec<usize> = c.attributes.iter().map(|a| a.classes.len()).collect();
            if counts != c.model.class_counts {
                return Err(ExportError::Manifest(format!(
                    "category {:?}: attribute classes {counts:?} disagree with the model's heads {:?}",
                    c.name, c.model.class_counts
                )));
            }
            c.model
                .check()
                .map_err(|e| ExportError::Manifest(format!("category {:?}: {e}", c.name)))?;
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises")
    }

    /// The taxonomy of the exported categories.
    pub fn taxonomy(&self) -> Result<Taxonomy, ExportError> {
        Taxonomy::new(
            self.categories
                .iter()
                .map(|c| CategorySpec {
                    name: c.name.clone(),
                    attributes: c.attributes.clone(),
                })
                .collect(),
        )
        .map_err(|e| ExportError::Manifest(e.to_string()))
    }

    pub fn category(&self, name: &str) -> Result<&ExportedCategory, ExportError> {
        self.categories
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.categories.iter().map(|c| c.name.as_str()).collect();
                ExportError::Manifest(format!(
                    "unknown category {name:?}; this export has {}",
                    known.join(", ")
                ))
            })
    }
}

impl ExportedCategory {
    /// Builds the category's network and loads its weight file's bytes into it.
    pub fn load<B: Backend>(
        &self,
        weights: Vec<u8>,
        device: &B::Device,
    ) -> Result<GarmentModel<B>, ExportError> {
        load_safetensors(self.model.init(device), weights).map_err(|source| ExportError::Weights {
            category: self.name.clone(),
            source,
        })
    }
}

/// A file-name-safe form of a category name (`Women Tops & Tunics` ->
/// `women-tops-tunics`).
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("Women Tops & Tunics"), "women-tops-tunics");
        assert_eq!(slug("Men Tshirts"), "men-tshirts");
    }
}
