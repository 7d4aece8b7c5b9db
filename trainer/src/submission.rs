//! The submission file: `id,Category,len,attr_1..attr_10`, one row for every row of
//! `test.csv` in its order, no blank cell; the slots after `len` hold
//! [`DUMMY_VALUE`].
//!
//! A test row without a prediction (its image could not be read) still gets a row: each
//! attribute takes the class most frequent in training ([`ClassPriors`]), and the run
//! prints a warning with the number of such rows.

pub use crate::data::csv::DUMMY_VALUE;
use crate::data::csv::{read_labelled, write_labelled, SlotRule};
use crate::data::{CategoryAttributes, DataError, LabelledRow, TestRow};
use model_core::taxonomy::Taxonomy;
use std::collections::HashMap;
use std::path::Path;

/// The most frequent training class of each attribute, the fallback prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPriors {
    most_frequent: Vec<Vec<usize>>,
}

impl ClassPriors {
    /// Counts the labelled cells of `rows`. Ties go to the lower class index; an
    /// attribute that no row labels falls back to class 0.
    pub fn from_rows(taxonomy: &Taxonomy, rows: &[LabelledRow]) -> Self {
        let mut counts: Vec<Vec<Vec<usize>>> = taxonomy
            .categories
            .iter()
            .map(|c| {
                c.attributes
                    .iter()
                    .map(|a| vec![0; a.classes.len()])
                    .collect()
            })
            .collect();
        for row in rows {
            for (a, label) in row.labels.iter().enumerate() {
                if let Some(slot) =
                    label.and_then(|l| counts.get_mut(row.category)?.get_mut(a)?.get_mut(l))
                {
                    *slot += 1;
                }
            }
        }
        let most_frequent = counts
            .into_iter()
            .map(|cat| {
                cat.into_iter()
                    .map(|c| {
                        c.iter()
                            .enumerate()
                            .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(&x.0)))
                            .map_or(0, |m| m.0)
                    })
                    .collect()
            })
            .collect();
        Self { most_frequent }
    }

    /// The fallback class of each attribute of `category`.
    pub fn for_category(&self, category: usize) -> &[usize] {
        &self.most_frequent[category]
    }
}

/// What [`write_submission`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionSummary {
    pub rows: usize,
    /// Test ids that had no prediction and got the most frequent classes.
    pub fallback_ids: Vec<u64>,
}

/// Writes the submission for every row of `test`. `predictions` maps a test id to one
/// class index per attribute of its category.
pub fn write_submission(
    path: &Path,
    taxonomy: &Taxonomy,
    test: &[TestRow],
    predictions: &HashMap<u64, Vec<usize>>,
    priors: &ClassPriors,
) -> Result<SubmissionSummary, DataError> {
    let mut rows = Vec::with_capacity(test.len());
    let mut fallback_ids = Vec::new();
    for t in test {
        let spec = &taxonomy.categories[t.category];
        let classes = match predictions.get(&t.id) {
            Some(p) => {
                if p.len() != spec.attributes.len() {
                    return Err(DataError::BadPrediction {
                        id: t.id,
                        problem: format!(
                            "{} classes for {:?}, which has {} attributes",
                            p.len(),
                            spec.name,
                            spec.attributes.len()
                        ),
                    });
                }
                for (a, (&class, attr)) in p.iter().zip(&spec.attributes).enumerate() {
                    if class >= attr.classes.len() {
                        return Err(DataError::BadPrediction {
                            id: t.id,
                            problem: format!(
                                "attr_{} ({}) has class index {class} of {}",
                                a + 1,
                                attr.name,
                                attr.classes.len()
                            ),
                        });
                    }
                }
                p.clone()
            }
            None => {
                fallback_ids.push(t.id);
                priors.for_category(t.category).to_vec()
            }
        };
        rows.push(LabelledRow {
            id: t.id,
            category: t.category,
            labels: classes.into_iter().map(Some).collect(),
        });
    }
    write_labelled(path, taxonomy, &rows, DUMMY_VALUE)?;
    if !fallback_ids.is_empty() {
        let shown: Vec<String> = fallback_ids.iter().take(10).map(u64::to_string).collect();
        eprintln!(
            "warning: {} test row(s) had no prediction (unreadable image) and got the most frequent training classes: ids {}{}",
            fallback_ids.len(),
            shown.join(", "),
            if fallback_ids.len() > 10 { ", ..." } else { "" }
        );
    }
    Ok(SubmissionSummary {
        rows: rows.len(),
        fallback_ids,
    })
}

/// Reads a submission back, checking the format strictly (no blank cell, `dummy_value`
/// after `len`, every class known).
pub fn read_submission(path: &Path, taxonomy: &Taxonomy) -> Result<Vec<LabelledRow>, DataError> {
    read_labelled(
        path,
        &CategoryAttributes::of(taxonomy),
        SlotRule::Dummy,
        |cell| {
            let spec = &taxonomy.categories[cell.category].attributes[cell.attribute];
            spec.class_index(cell.value)
                .map(Some)
                .ok_or_else(|| DataError::BadValue {
                    file: path.to_path_buf(),
                    line: cell.line,
                    column: format!("attr_{}", cell.attribute + 1),
                    value: cell.value.to_string(),
                    problem: format!("is not a class of {}", spec.name),
                })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::TempDir;

    #[test]
    fn round_trip_with_fallback_rows() {
        let taxonomy = Taxonomy::meesho();
        let dir = TempDir::new("submission");
        let test: Vec<TestRow> = (0..6)
            .map(|i| TestRow {
                id: 100 + i,
                category: (i % 5) as usize,
            })
            .collect();
        let mut predictions = HashMap::new();
        for t in &test[..4] {
            let spec = &taxonomy.categories[t.category];
            predictions.insert(
                t.id,
                spec.attributes
                    .iter()
                    .map(|a| a.classes.len() - 1)
                    .collect::<Vec<_>>(),
            );
        }
        let train = vec![
            LabelledRow {
                id: 0,
                category: 1,
                labels: vec![Some(2); 10],
            },
            LabelledRow {
                id: 1,
                category: 1,
                labels: vec![Some(1); 10],
            },
            LabelledRow {
                id: 2,
                category: 1,
                labels: vec![Some(1); 10],
            },
        ];
        let priors = ClassPriors::from_rows(&taxonomy, &train);
        assert_eq!(priors.for_category(1), &[1; 10]);
        let path = dir.path().join("submission.csv");
        let summary = write_submission(&path, &taxonomy, &test, &predictions, &priors).unwrap();
        assert_eq!(
            summary,
            SubmissionSummary {
                rows: 6,
                fallback_ids: vec![104, 105]
            }
        );

        let back = read_submission(&path, &taxonomy).unwrap();
        assert_eq!(back.len(), test.len());
        for (row, t) in back.iter().zip(&test) {
            assert_eq!((row.id, row.category), (t.id, t.category));
            let expected: Vec<usize> = match predictions.get(&t.id) {
                Some(p) => p.clone(),
                None => priors.for_category(t.category).to_vec(),
            };
            assert_eq!(
                row.labels,
                expected.into_iter().map(Some).collect::<Vec<_>>()
            );
        }
        // The text itself: header, no blank cell, dummy_value after len.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10"));
        let first = lines.next().unwrap();
        assert!(first.starts_with("100,Men Tshirts,5,"), "{first}");
        assert!(
            first.ends_with(",dummy_value,dummy_value,dummy_value,dummy_value,dummy_value"),
            "{first}"
        );
        assert!(
            text.lines().all(|l| !l.contains(",,") && !l.ends_with(',')),
            "no blank cell"
        );
    }

    #[test]
    fn bad_predictions_and_blank_cells_are_errors() {
        let taxonomy = Taxonomy::meesho();
        let dir = TempDir::new("submission_bad");
        let test = vec![TestRow { id: 1, category: 0 }];
        let priors = ClassPriors::from_rows(&taxonomy, &[]);
        let path = dir.path().join("s.csv");
        let short = HashMap::from([(1u64, vec![0usize; 3])]);
        assert!(matches!(
            write_submission(&path, &taxonomy, &test, &short, &priors),
            Err(DataError::BadPrediction { id: 1, .. })
        ));
        let out_of_range = HashMap::from([(1u64, vec![0, 0, 0, 0, 9])]);
        assert!(matches!(
            write_submission(&path, &taxonomy, &test, &out_of_range, &priors),
            Err(DataError::BadPrediction { .. })
        ));

        let header = "id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10\n";
        std::fs::write(&path, format!("{header}1,Men Tshirts,5,white,,solid,solid,short sleeves,dummy_value,dummy_value,dummy_value,dummy_value,dummy_value\n")).unwrap();
        let err = read_submission(&path, &taxonomy).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("attr_2") && err.contains("blank"),
            "{err}"
        );
    }
}
