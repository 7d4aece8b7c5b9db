//! Reading a data set in the Meesho Visual Taxonomy layout (SPEC.md, "The data format"):
//!
//! ```text
//! DIR/train.csv                     id,Category,len,attr_1..attr_10
//! DIR/test.csv                      id,Category
//! DIR/category_attributes.parquet   Category, No_of_attribute, Attribute_list
//! DIR/train_images/000123.jpg       <id zero-padded to 6 digits>.jpg
//! DIR/test_images/000123.jpg
//! DIR/test_labels.csv               optional, not part of the Meesho files: the test
//!                                   rows' labels in train.csv's layout (`trainer synth`
//!                                   writes it so that a model can be scored on the
//!                                   shifted test domain)
//! ```
//!
//! [`Dataset::open`] reads the tables and stops at the first structural problem with a
//! [`DataError`] that names the file, the line and the value. [`Dataset::load_images`]
//! then decodes every image once, in parallel, resized to the training size; rows whose
//! image cannot be used are skipped and listed in a [`report::DataReport`].
//!
//! Decisions:
//! - **Class order.** The set of classes of an attribute is what `train.csv` uses. Their
//!   order (the model's output index) follows the built-in taxonomy
//!   ([`Taxonomy::meesho`]) for the classes it knows, which is the order in which they
//!   first appear in the real `train.csv`; classes it does not know follow in order of
//!   first appearance. So the real data and `trainer synth`'s data give the same indices,
//!   and shuffling `train.csv` does not renumber known classes. An attribute that no
//!   training row labels takes the built-in classes (with a warning), or is an error for
//!   an attribute the built-in taxonomy does not know.
//! - **Attributes.** Their names and order come from `category_attributes.parquet`; when
//!   that file is missing, from the built-in taxonomy, with a warning.
//! - **Labels outside the taxonomy.** A training label defines its class, so it is never
//!   outside. A label in `test_labels.csv` that training never saw cannot be predicted:
//!   it is treated as missing for that attribute, the row is kept, and each such cell is
//!   counted in a warning and listed in the report (`label_dropped`).
//! - **Blank cells** (empty or only spaces) are missing labels; `default` is a class.
//!   Cells after a row's `len` must be blank.

pub mod csv;
pub mod images;
pub mod parquet;
pub mod report;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use model_core::taxonomy::{AttributeSpec, CategorySpec, Taxonomy, TaxonomyError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use images::{CacheMode, ImageOptions, ImageStore, LoadedSplit};
pub use report::{DataReport, ReportAction, ReportEntry};

/// File and folder names of the Meesho layout.
pub const TRAIN_CSV: &str = "train.csv";
pub const TEST_CSV: &str = "test.csv";
pub const TEST_LABELS_CSV: &str = "test_labels.csv";
pub const CATEGORY_PARQUET: &str = "category_attributes.parquet";
pub const TRAIN_IMAGES: &str = "train_images";
pub const TEST_IMAGES: &str = "test_images";

/// Above this many bytes of resized images, an in-memory cache gets a warning.
pub const MEMORY_CACHE_WARNING_BYTES: u64 = 8 << 30;

/// The image file of row `id`: `<id zero-padded to 6 digits>.jpg`.
pub fn image_file_name(id: u64) -> String {
    format!("{id:06}.jpg")
}

/// A structural problem with a data set: the run cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a {expected} file: {detail}", file.display())]
    WrongFormat {
        file: PathBuf,
        expected: &'static str,
        detail: String,
    },
    #[error("{}, line 1 (header): missing column {column:?}; the header has {header}", file.display())]
    MissingColumn {
        file: PathBuf,
        column: String,
        header: String,
    },
    #[error("{}, line {line}: column {column:?} is not UTF-8 text: {value:?} (re-save the file as UTF-8)", file.display())]
    NotUtf8 {
        file: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{}, line {line}: malformed CSV: {message}", file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}, line {line}: column {column:?}: {value:?} {problem}", file.display())]
    BadValue {
        file: PathBuf,
        line: u64,
        column: String,
        value: String,
        problem: String,
    },
    #[error("{}, line {line}: unknown category {value:?}; the known categories are {known}", file.display())]
    UnknownCategory {
        file: PathBuf,
        line: u64,
        value: String,
        known: String,
    },
    #[error("{}, line {line}: len is {value:?} but category {category:?} has {expected} attributes", file.display())]
    LenMismatch {
        file: PathBuf,
        line: u64,
        category: String,
        value: String,
        expected: usize,
    },
    #[error("{}, line {line}: id {id} appears twice (first on line {first})", file.display())]
    DuplicateId {
        file: PathBuf,
        line: u64,
        id: u64,
        first: u64,
    },
    #[error("{}, row {row}: {message}", file.display())]
    ParquetRow {
        file: PathBuf,
        row: usize,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    Parquet { file: PathBuf, message: String },
    #[error("{}: {source}", file.display())]
    Taxonomy {
        file: PathBuf,
        #[source]
        source: TaxonomyError,
    },
    #[error("{}: category {category:?}, attribute {attribute:?}: no training row labels it and the built-in taxonomy does not know it, so it has no classes", file.display())]
    NoClasses {
        file: PathBuf,
        category: String,
        attribute: String,
    },
    #[error("prediction for test id {id}: {problem}")]
    BadPrediction { id: u64, problem: String },
    #[error("image cache {}: {message}", file.display())]
    Cache { file: PathBuf, message: String },
}

impl DataError {
    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        Self::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

/// Where a data set's attribute lists came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaxonomySource {
    /// `category_attributes.parquet` of the data set.
    Parquet(PathBuf),
    /// The parquet file was missing: [`Taxonomy::meesho`]'s attribute lists.
    BuiltIn,
}

/// One labelled row (`train.csv` or `test_labels.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledRow {
    pub id: u64,
    /// Index into [`Taxonomy::categories`].
    pub category: usize,
    /// One entry per attribute of the category, in `attr_1..` order: the class index, or
    /// `None` where the cell was blank (a missing label).
    pub labels: Vec<Option<usize>>,
}

/// One row of `test.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRow {
    pub id: u64,
    /// Index into [`Taxonomy::categories`].
    pub category: usize,
}

/// The tables of a data set, checked; images not yet read.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub taxonomy: Taxonomy,
    pub taxonomy_source: TaxonomySource,
    /// Every row of `train.csv`, in file order.
    pub train: Vec<LabelledRow>,
    /// Every row of `test.csv`, in file order.
    pub test: Vec<TestRow>,
    /// The rows of `test_labels.csv`, when the data set has that file.
    pub test_labels: Option<Vec<LabelledRow>>,
    /// What was printed as a warning while reading (missing parquet, dropped labels, ...).
    pub warnings: Vec<String>,
    /// Cells and rows that were dropped while reading the tables.
    pub report: DataReport,
}

/// A data set's usable rows with their resized images.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// Rows of [`Dataset::train`] with an image.
    pub train: LoadedSplit,
    /// Rows of [`Dataset::test`] with an image (the unlabelled target domain).
    pub test: LoadedSplit,
    /// Everything skipped or dropped, as written to the report file.
    pub report: DataReport,
}

/// Prints a warning on stderr and keeps it for the caller.
pub(crate) fn warn(warnings: &mut Vec<String>, message: String) {
    eprintln!("warning: {message}");
    warnings.push(message);
}

impl Dataset {
    /// Reads and checks `train.csv`, `test.csv`, `category_attributes.parquet` (or falls
    /// back to the built-in attribute lists) and, when present, `test_labels.csv`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref().to_path_buf();
        let mut warnings = Vec::new();
        let reference = Taxonomy::meesho();

        let parquet_path = root.join(CATEGORY_PARQUET);
        let (attribute_lists, taxonomy_source) = if parquet_path.exists() {
            let lists = parquet::read_category_attributes(&parquet_path)?;
            (lists, TaxonomySource::Parquet(parquet_path.clone()))
        } else {
            warn(
                &mut warnings,
                format!(
                    "{} is missing: using the built-in Meesho attribute lists",
                    parquet_path.display()
                ),
            );
            let lists = reference
                .categories
                .iter()
                .map(|c| CategoryAttributes {
                    category: c.name.clone(),
                    attributes: c.attributes.iter().map(|a| a.name.clone()).collect(),
                })
                .collect();
            (lists, TaxonomySource::BuiltIn)
        };

        let train_path = root.join(TRAIN_CSV);
        let mut vocab = FirstSeenVocab::new(&attribute_lists);
        let raw_train = csv::read_labelled(
            &train_path,
            &attribute_lists,
            csv::SlotRule::Blank,
            |cell| {
                Ok(Some(vocab.intern(
                    cell.category,
                    cell.attribute,
                    cell.value,
                )))
            },
        )?;
        let (taxonomy, remap) =
            vocab.into_taxonomy(&reference, &train_path, &attribute_lists, &mut warnings)?;
        let train = raw_train
            .into_iter()
            .map(|mut row| {
                for (a, label) in row.labels.iter_mut().enumerate() {
                    *label = label.map(|first_seen| remap[row.category][a][first_seen]);
                }
                row
            })
            .collect();

        let test = csv::read_test(&root.join(TEST_CSV), &taxonomy)?;

        let mut report = DataReport::default();
        let labels_path = root.join(TEST_LABELS_CSV);
        let test_labels = if labels_path.exists() {
            Some(read_test_labels(
                &labels_path,
                &taxonomy,
                &mut report,
                &mut warnings,
            )?)
        } else {
            None
        };

        Ok(Self {
            root,
            taxonomy,
            taxonomy_source,
            train,
            test,
            test_labels,
            warnings,
            report,
        })
    }

    /// Decodes the images of every train and test row once (in parallel), resizes them to
    /// `opts.size` and keeps them as `opts.cache` says. Rows whose image cannot be used
    /// are skipped; the run prints how many and why, and writes the full list (with the
    /// labels dropped while reading the tables) to `report_path` (see [`report`]).
    pub fn load_images(
        &self,
        opts: &ImageOptions,
        report_path: &Path,
    ) -> Result<LoadedData, DataError> {
        let bytes = (self.train.len() + self.test.len()) as u64 * (opts.size as u64).pow(2) * 3;
        if opts.cache == CacheMode::Memory && bytes > MEMORY_CACHE_WARNING_BYTES {
            eprintln!(
                "warning: keeping {} images of {} px in memory needs about {:.1} GiB; a disk cache (CacheMode::Disk, --cache-dir) avoids that",
                self.train.len() + self.test.len(),
                opts.size,
                bytes as f64 / (1u64 << 30) as f64
            );
        }
        let train_ids: Vec<u64> = self.train.iter().map(|r| r.id).collect();
        let test_ids: Vec<u64> = self.test.iter().map(|r| r.id).collect();
        let (train, train_report) =
            images::load_split("train", &self.train_images_dir(), &train_ids, opts)?;
        let (test, test_report) =
            images::load_split("test", &self.test_images_dir(), &test_ids, opts)?;
        let mut report = self.report.clone();
        report.extend(train_report);
        report.extend(test_report);
        report.write_csv(report_path)?;
        for (split, total, kept) in [
            ("train", self.train.len(), train.rows.len()),
            ("test", self.test.len(), test.rows.len()),
        ] {
            eprintln!("{split}: {kept} of {total} rows have a usable image");
        }
        if report.entries.is_empty() {
            eprintln!("no row skipped; data report: {}", report_path.display());
        } else {
            for line in report.summary_lines() {
                eprintln!("{line}");
            }
            eprintln!(
                "the list of skipped rows and dropped labels is in {}",
                report_path.display()
            );
        }
        Ok(LoadedData {
            train,
            test,
            report,
        })
    }

    pub fn train_images_dir(&self) -> PathBuf {
        self.root.join(TRAIN_IMAGES)
    }

    pub fn test_images_dir(&self) -> PathBuf {
        self.root.join(TEST_IMAGES)
    }
}

/// Reads `test_labels.csv` against a fixed taxonomy: a label that training never saw is
/// dropped (treated as missing), reported and counted in one warning.
fn read_test_labels(
    path: &Path,
    taxonomy: &Taxonomy,
    report: &mut DataReport,
    warnings: &mut Vec<String>,
) -> Result<Vec<LabelledRow>, DataError> {
    let lists = CategoryAttributes::of(taxonomy);
    let mut dropped = 0usize;
    let rows = csv::read_labelled(path, &lists, csv::SlotRule::Blank, |cell| {
        let spec = &taxonomy.categories[cell.category].attributes[cell.attribute];
        Ok(match spec.class_index(cell.value) {
            Some(index) => Some(index),
            None => {
                dropped += 1;
                report.push(ReportEntry {
                    split: "test_labels".into(),
                    id: cell.id,
                    file: path.to_path_buf(),
                    action: ReportAction::LabelDropped,
                    reason: format!(
                        "label outside the taxonomy: line {}: {}={:?} is not a class of {:?} in the training data; treated as missing",
                        cell.line, spec.name, cell.value, taxonomy.categories[cell.category].name
                    ),
                });
                None
            }
        })
    })?;
    if dropped > 0 {
        warn(
            warnings,
            format!(
                "{}: {dropped} label(s) outside the training taxonomy were treated as missing (listed in the data report)",
                path.display()
            ),
        );
    }
    Ok(rows)
}

/// A category's attribute names in `attr_1..` order, as the parquet file lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryAttributes {
    pub category: String,
    pub attributes: Vec<String>,
}

impl CategoryAttributes {
    pub fn of(taxonomy: &Taxonomy) -> Vec<Self> {
        taxonomy
            .categories
            .iter()
            .map(|c| Self {
                category: c.name.clone(),
                attributes: c.attributes.iter().map(|a| a.name.clone()).collect(),
            })
            .collect()
    }
}

/// Class names per (category, attribute) in order of first appearance.
struct FirstSeenVocab {
    classes: Vec<Vec<Vec<String>>>,
    index: Vec<Vec<HashMap<String, usize>>>,
}

impl FirstSeenVocab {
    fn new(lists: &[CategoryAttributes]) -> Self {
        Self {
            classes: lists
                .iter()
                .map(|c| vec![Vec::new(); c.attributes.len()])
                .collect(),
            index: lists
                .iter()
                .map(|c| vec![HashMap::new(); c.attributes.len()])
                .collect(),
        }
    }

    fn intern(&mut self, category: usize, attribute: usize, value: &str) -> usize {
        let index = &mut self.index[category][attribute];
        if let Some(&i) = index.get(value) {
            return i;
        }
        let classes = &mut self.classes[category][attribute];
        classes.push(value.to_string());
        index.insert(value.to_string(), classes.len() - 1);
        classes.len() - 1
    }

    /// Orders each attribute's classes (see the module docs) and returns the taxonomy and,
    /// per category and attribute, the map from first-seen index to final index.
    #[allow(clippy::type_complexity)]
    fn into_taxonomy(
        self,
        reference: &Taxonomy,
        train_path: &Path,
        lists: &[CategoryAttributes],
        warnings: &mut Vec<String>,
    ) -> Result<(Taxonomy, Vec<Vec<Vec<usize>>>), DataError> {
        let mut categories = Vec::with_capacity(lists.len());
        let mut remaps = Vec::with_capacity(lists.len());
        let mut unknown_to_reference = Vec::new();
        for (c, list) in lists.iter().enumerate() {
            let reference_category = reference.category(&list.category).ok();
            let mut attributes = Vec::with_capacity(list.attributes.len());
            let mut remap_c = Vec::with_capacity(list.attributes.len());
            for (a, name) in list.attributes.iter().enumerate() {
                let seen = &self.classes[c][a];
                let reference_attr = reference_category.and_then(|rc| rc.attribute(name));
                let ordered = match (seen.is_empty(), reference_attr) {
                    (true, Some(r)) => {
                        warn(
                            warnings,
                            format!(
                                "{}: no row labels {:?} / {name:?}: using the built-in classes",
                                train_path.display(),
                                list.category
                            ),
                        );
                        r.classes.clone()
                    }
                    (true, None) => {
                        return Err(DataError::NoClasses {
                            file: train_path.to_path_buf(),
                            category: list.category.clone(),
                            attribute: name.clone(),
                        })
                    }
                    (false, reference_attr) => {
                        if let Some(r) = reference_attr {
                            for class in seen.iter().filter(|s| r.class_index(s).is_none()) {
                                unknown_to_reference
                                    .push(format!("{}/{name}={class:?}", list.category));
                            }
                        }
                        order_classes(seen, reference_attr)
                    }
                };
                let remap = seen
                    .iter()
                    .map(|s| ordered.iter().position(|o| o == s).unwrap_or(0))
                    .collect();
                remap_c.push(remap);
                attributes.push(AttributeSpec {
                    name: name.clone(),
                    classes: ordered,
                });
            }
            remaps.push(remap_c);
            categories.push(CategorySpec {
                name: list.category.clone(),
                attributes,
            });
        }
        if !unknown_to_reference.is_empty() {
            // Not an error (the data decides), but the real data should agree with the
            // built-in taxonomy, so say so.
            warn(
                warnings,
                format!(
                    "{}: {} class(es) that the built-in Meesho taxonomy does not list: {}",
                    train_path.display(),
                    unknown_to_reference.len(),
                    unknown_to_reference.join(", ")
                ),
            );
        }
        let taxonomy = Taxonomy::new(categories).map_err(|source| DataError::Taxonomy {
            file: train_path.to_path_buf(),
            source,
        })?;
        Ok((taxonomy, remaps))
    }
}

/// The reference's classes that the data uses, in the reference's order, then the data's
/// other classes in first-seen order.
fn order_classes(seen: &[String], reference: Option<&AttributeSpec>) -> Vec<String> {
    let mut ordered: Vec<String> = match reference {
        Some(r) => r
            .classes
            .iter()
            .filter(|c| seen.contains(c))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    for class in seen {
        if !ordered.contains(class) {
            ordered.push(class.clone());
        }
    }
    ordered
}
