//! What a model predicts: categories, their attributes in `attr_1..attr_N` order, and the
//! class names of each attribute.
//!
//! The Meesho taxonomy is built in ([`Taxonomy::meesho`]); a dataset's own
//! `category_attributes.parquet` and `train.csv` override it (the trainer's data layer
//! reads those files and calls [`Taxonomy::new`]).

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The submission format has ten attribute slots (`attr_1` .. `attr_10`).
pub const MAX_ATTRIBUTES: usize = 10;

/// The class data of the Meesho Visual Taxonomy challenge, in attribute order.
const MEESHO_JSON: &str = include_str!("meesho_taxonomy.json");

/// A taxonomy that cannot be used, with the category or attribute at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaxonomyError {
    #[error("unknown category {name:?}; known categories: {known}")]
    UnknownCategory { name: String, known: String },
    #[error(
        "category {category:?} has {count} attributes; the format allows 1 to {MAX_ATTRIBUTES}"
    )]
    AttributeCount { category: String, count: usize },
    #[error("category {0:?} appears twice")]
    DuplicateCategory(String),
    #[error("category {category:?}: attribute {attribute:?} appears twice")]
    DuplicateAttribute { category: String, attribute: String },
    #[error("category {category:?}, attribute {attribute:?}: {problem}")]
    BadClasses {
        category: String,
        attribute: String,
        problem: String,
    },
    #[error("taxonomy JSON: {0}")]
    Json(String),
}

/// One attribute (`attr_k` of its category) and its classes; a class's index in
/// `classes` is the model's output index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeSpec {
    pub name: String,
    pub classes: Vec<String>,
}

impl AttributeSpec {
    /// The index of `label`, if it is one of this attribute's classes.
    pub fn class_index(&self, label: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == label)
    }
}

/// One category and its attributes in `attr_1..attr_N` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategorySpec {
    pub name: String,
    pub attributes: Vec<AttributeSpec>,
}

impl CategorySpec {
    /// Number of classes of each attribute, in attribute order.
    pub fn class_counts(&self) -> Vec<usize> {
        self.attributes.iter().map(|a| a.classes.len()).collect()
    }

    pub fn attribute(&self, name: &str) -> Option<&AttributeSpec> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// All categories a model set covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taxonomy {
    pub categories: Vec<CategorySpec>,
}

impl Taxonomy {
    /// Builds a taxonomy and checks it: 1 to 10 attributes per category, no duplicate
    /// names, at least one class per attribute and no duplicate or blank class.
    pub fn new(categories: Vec<CategorySpec>) -> Result<Self, TaxonomyError> {
        let mut seen = HashSet::new();
        for c in &categories {
            if !seen.insert(c.name.as_str()) {
                return Err(TaxonomyError::DuplicateCategory(c.name.clone()));
            }
            if c.attributes.is_empty() || c.attributes.len() > MAX_ATTRIBUTES {
                return Err(TaxonomyError::AttributeCount {
                    category: c.name.clone(),
                    count: c.attributes.len(),
                });
            }
            let mut names = HashSet::new();
            for a in &c.attributes {
                if !names.insert(a.name.as_str()) {
                    return Err(TaxonomyError::DuplicateAttribute {
                        category: c.name.clone(),
                        attribute: a.name.clone(),
                    });
                }
                let bad = |problem: String| TaxonomyError::BadClasses {
                    category: c.name.clone(),
                    attribute: a.name.clone(),
                    problem,
                };
                if a.classes.is_empty() {
                    return Err(bad("no classes".into()));
                }
                let mut classes = HashSet::new();
                for class in &a.classes {
                    if class.trim().is_empty() {
                        return Err(bad(
                            "a blank class name (blank means a missing label)".into()
                        ));
                    }
                    if !classes.insert(class.as_str()) {
                        return Err(bad(format!("class {class:?} appears twice")));
                    }
                }
            }
        }
        Ok(Self { categories })
    }

    /// The Meesho Visual Taxonomy: 5 categories, 42 category-attribute pairs.
    pub fn meesho() -> Self {
        Self::from_json(MEESHO_JSON).expect("the built-in taxonomy is valid")
    }

    pub fn from_json(text: &str) -> Result<Self, TaxonomyError> {
        let raw: Taxonomy =
            serde_json::from_str(text).map_err(|e| TaxonomyError::Json(e.to_string()))?;
        Self::new(raw.categories)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a taxonomy always serialises")
    }

    /// The category called `name`, or an error that lists the known ones.
    pub fn category(&self, name: &str) -> Result<&CategorySpec, TaxonomyError> {
        self.categories
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| TaxonomyError::UnknownCategory {
                name: name.to_string(),
                known: self.category_names().join(", "),
            })
    }

    pub fn category_names(&self) -> Vec<&str> {
        self.categories.iter().map(|c| c.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meesho_has_five_categories_and_42_attributes() {
        let t = Taxonomy::meesho();
        assert_eq!(
            t.category_names(),
            [
                "Men Tshirts",
                "Sarees",
                "Kurtis",
                "Women Tshirts",
                "Women Tops & Tunics"
            ]
        );
        let pairs: usize = t.categories.iter().map(|c| c.attributes.len()).sum();
        assert_eq!(pairs, 42);
        let tops = t.category("Women Tops & Tunics").unwrap();
        // The official spelling, kept as the data has it.
        assert_eq!(tops.attributes[4].name, "ocassion");
        let sarees = t.category("Sarees").unwrap();
        assert_eq!(sarees.attributes.len(), 10);
        assert_eq!(sarees.attributes[0].name, "blouse_pattern");
        let men = t.category("Men Tshirts").unwrap();
        assert_eq!(men.class_counts(), [4, 2, 2, 3, 2]);
        assert_eq!(men.attributes[0].class_index("default"), Some(0));
    }

    #[test]
    fn unknown_category_lists_the_known_ones() {
        let err = Taxonomy::meesho().category("Jeans").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"Jeans\"") && msg.contains("Kurtis"), "{msg}");
    }

    #[test]
    fn json_round_trip_and_validation() {
        let t = Taxonomy::meesho();
        assert_eq!(Taxonomy::from_json(&t.to_json()).unwrap(), t);
        let attr = |n: &str, c: &[&str]| AttributeSpec {
            name: n.into(),
            classes: c.iter().map(|s| s.to_string()).collect(),
        };
        let bad = Taxonomy::new(vec![CategorySpec {
            name: "X".into(),
            attributes: vec![attr("color", &["red", "red"])],
        }]);
        assert!(matches!(bad, Err(TaxonomyError::BadClasses { .. })));
        let too_many = Taxonomy::new(vec![CategorySpec {
            name: "X".into(),
            attributes: (0..11).map(|i| attr(&format!("a{i}"), &["x"])).collect(),
        }]);
        assert!(matches!(
            too_many,
            Err(TaxonomyError::AttributeCount { count: 11, .. })
        ));
    }
}
