//! The train/validation split (SPEC.md, Training 2): 10% of each category's rows go to
//! validation, reproducibly for a seed, stratified on the category's first attribute.
//!
//! Within a category the rows are grouped by their first attribute's label (rows where
//! it is blank form one more group), shuffled within each group, and laid end to end;
//! validation rows are then taken at evenly spaced positions from a random offset
//! (systematic sampling). Every group thus gives its share of validation rows to within
//! one row, and the category gives exactly `round(n * fraction)` of them, at least one
//! as soon as the category has two rows, and never all of them.

use crate::data::LabelledRow;
use crate::rng::Rng;
use std::collections::BTreeMap;

/// The share of each category's rows that goes to validation.
pub const VAL_FRACTION: f64 = 0.1;

/// Seed-stream tag that keeps the split apart from other uses of the seed.
const SPLIT_STREAM: u64 = 0x5B1;

/// Indices into the rows given to [`split_train_val`], each in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainValSplit {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Splits `rows` per category, `val_fraction` of each to validation.
pub fn split_train_val(rows: &[LabelledRow], val_fraction: f64, seed: u64) -> TrainValSplit {
    let mut by_category: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_category.entry(row.category).or_default().push(i);
    }
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (category, members) in by_category {
        let mut rng = Rng::derived(seed, &[SPLIT_STREAM, category as u64]);
        // Groups by first label; `None` (blank) sorts first, which is as good as last.
        let mut groups: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for &i in &members {
            groups
                .entry(rows[i].labels.first().copied().flatten())
                .or_default()
                .push(i);
        }
        let mut ordered = Vec::with_capacity(members.len());
        for (_, mut group) in groups {
            rng.shuffle(&mut group);
            ordered.extend(group);
        }
        let n = ordered.len();
        let n_val = if n < 2 {
            0
        } else {
            ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1)
        };
        let mut is_val = vec![false; n];
        if n_val > 0 {
            let step = n as f64 / n_val as f64;
            let offset = rng.f64() * step;
            for j in 0..n_val {
                is_val[((offset + j as f64 * step) as usize).min(n - 1)] = true;
            }
        }
        for (pos, &i) in ordered.iter().enumerate() {
            if is_val[pos] {
                val.push(i);
            } else {
                train.push(i);
            }
        }
    }
    train.sort_unstable();
    val.sort_unstable();
    TrainValSplit { train, val }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<LabelledRow> {
        let mut rows = Vec::new();
        for i in 0..1000u64 {
            let category = (i % 3) as usize;
            // Unbalanced first attribute: class 0 common, 1 rarer, 2 rare, some blank.
            let first = match i % 20 {
                0..=11 => Some(0),
                12..=16 => Some(1),
                17 => Some(2),
                _ => None,
            };
            rows.push(LabelledRow {
                id: i,
                category,
                labels: vec![first, Some(0)],
            });
        }
        rows
    }

    #[test]
    fn ten_percent_per_category_stratified_and_reproducible() {
        let rows = rows();
        let split = split_train_val(&rows, VAL_FRACTION, 42);
        assert_eq!(split.train.len() + split.val.len(), rows.len());
        let mut all: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..rows.len()).collect::<Vec<_>>(),
            "a partition of the rows"
        );
        for category in 0..3 {
            let n = rows.iter().filter(|r| r.category == category).count();
            let v = split
                .val
                .iter()
                .filter(|&&i| rows[i].category == category)
                .count();
            assert_eq!(v, (n as f64 * 0.1).round() as usize, "category {category}");
            for label in [Some(0), Some(1), Some(2), None] {
                let k = rows
                    .iter()
                    .filter(|r| r.category == category && r.labels[0] == label)
                    .count();
                let kv = split
                    .val
                    .iter()
                    .filter(|&&i| rows[i].category == category && rows[i].labels[0] == label)
                    .count();
                assert!(
                    (kv as f64 - k as f64 * 0.1).abs() <= 1.0,
                    "category {category} label {label:?}: {kv} of {k}"
                );
            }
        }
        assert_eq!(split, split_train_val(&rows, VAL_FRACTION, 42));
        assert_ne!(split.val, split_train_val(&rows, VAL_FRACTION, 43).val);
    }

    #[test]
    fn tiny_categories_keep_a_training_row() {
        let one = vec![LabelledRow {
            id: 0,
            category: 0,
            labels: vec![Some(0)],
        }];
        let split = split_train_val(&one, VAL_FRACTION, 1);
        assert_eq!((split.train.len(), split.val.len()), (1, 0));
        let two: Vec<LabelledRow> = (0..2)
            .map(|i| LabelledRow {
                id: i,
                category: 0,
                labels: vec![None],
            })
            .collect();
        let split = split_train_val(&two, VAL_FRACTION, 1);
        assert_eq!((split.train.len(), split.val.len()), (1, 1));
    }
}
