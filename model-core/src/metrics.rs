//! The competition score: per attribute, micro F1 and macro F1 over its classes and their
//! harmonic mean; a category scores the plain mean over its attributes, and the overall
//! score is the plain mean over categories.
//!
//! Rows whose true label is missing do not count for that attribute. Macro F1 follows
//! scikit-learn's `f1_score(average="macro")`: it averages over every class that occurs
//! in the counted rows' true labels *or* predictions, so a class the model invents gets
//! F1 0 and pulls the average down. For single-label multiclass data micro F1 equals
//! accuracy.
//!
//! An attribute with no counted rows has support 0 and all scores 0. Such an attribute
//! says nothing about the model (the competition's own test labels always have rows for
//! every attribute; an empty one only happens on a small or unlucky validation split), so
//! it is left out of its category's mean instead of counting as a 0. In the same way a
//! category none of whose attributes has counted rows is left out of the overall mean.
//! When nothing at all is counted the score is 0.

use serde::{Deserialize, Serialize};

/// Predictions that cannot be scored, naming the attribute at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("attribute {attribute:?}: {truth} true labels but {pred} predictions")]
    LengthMismatch {
        attribute: String,
        truth: usize,
        pred: usize,
    },
}

/// The score of one attribute. `support` is the number of counted rows (those with a
/// true label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeScore {
    pub name: String,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub harmonic: f64,
    pub support: usize,
}

/// The score of one category: the plain mean of its attributes' harmonic means (over the
/// attributes with counted rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub name: String,
    pub score: f64,
    pub attributes: Vec<AttributeScore>,
}

impl CategoryScore {
    /// Whether any attribute of this category had a counted row.
    pub fn has_support(&self) -> bool {
        self.attributes.iter().any(|a| a.support > 0)
    }
}

/// The overall score: the plain mean of the category scores (over the categories with
/// counted rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub score: f64,
    pub categories: Vec<CategoryScore>,
}

/// Per-class counts of one attribute, accumulated row by row so that a trainer can score
/// a whole validation pass without keeping every prediction.
///
/// Three counts per class are all F1 needs: true positives, how often the class is the
/// true label and how often it is predicted (F1 = 2 tp / (true + predicted)). The vectors
/// grow to the largest class index seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeTally {
    true_positives: Vec<usize>,
    true_counts: Vec<usize>,
    pred_counts: Vec<usize>,
    support: usize,
}

impl AttributeTally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tally with room for `num_classes` classes (more may still be added).
    pub fn with_classes(num_classes: usize) -> Self {
        Self {
            true_positives: vec![0; num_classes],
            true_counts: vec![0; num_classes],
            pred_counts: vec![0; num_classes],
            support: 0,
        }
    }

    /// Counts one row; a row with no true label (`None`) is ignored.
    pub fn add(&mut self, truth: Option<usize>, pred: usize) {
        let Some(truth) = truth else {
            return;
        };
        self.grow(truth.max(pred) + 1);
        self.true_counts[truth] += 1;
        self.pred_counts[pred] += 1;
        if truth == pred {
            self.true_positives[truth] += 1;
        }
        self.support += 1;
    }

    /// Counts a batch of rows. Fails, naming `attribute`, when the lengths differ; then
    /// nothing is counted.
    pub fn add_batch(
        &mut self,
        attribute: &str,
        truth: &[Option<usize>],
        pred: &[usize],
    ) -> Result<(), MetricsError> {
        if truth.len() != pred.len() {
            return Err(MetricsError::LengthMismatch {
                attribute: attribute.to_string(),
                truth: truth.len(),
                pred: pred.len(),
            });
        }
        for (&t, &p) in truth.iter().zip(pred) {
            self.add(t, p);
        }
        Ok(())
    }

    /// Adds another tally's counts to this one (e.g. from another worker or shard).
    pub fn merge(&mut self, other: &AttributeTally) {
        self.grow(other.true_counts.len());
        for (c, &n) in other.true_positives.iter().enumerate() {
            self.true_positives[c] += n;
        }
        for (c, &n) in other.true_counts.iter().enumerate() {
            self.true_counts[c] += n;
        }
        for (c, &n) in other.pred_counts.iter().enumerate() {
            self.pred_counts[c] += n;
        }
        self.support += other.support;
    }

    /// Number of counted rows.
    pub fn support(&self) -> usize {
        self.support
    }

    /// Micro F1, which for one label per row is the fraction predicted right; 0 with no
    /// counted rows.
    pub fn micro_f1(&self) -> f64 {
        if self.support == 0 {
            return 0.0;
        }
        self.true_positives.iter().sum::<usize>() as f64 / self.support as f64
    }

    /// Macro F1 over the classes seen among the counted rows' true labels or predictions,
    /// as scikit-learn computes it; 0 with no counted rows.
    pub fn macro_f1(&self) -> f64 {
        let mut sum = 0.0;
        let mut classes = 0usize;
        for c in 0..self.true_counts.len() {
            let seen = self.true_counts[c] + self.pred_counts[c];
            if seen == 0 {
                continue;
            }
            // With precision p = tp/pred and recall r = tp/true, 2pr/(p+r) simplifies to
            // 2tp/(true+pred); it is 0 when tp is 0, which is sklearn's value for a class
            // that only appears in the predictions (or is never predicted).
            sum += 2.0 * self.true_positives[c] as f64 / seen as f64;
            classes += 1;
        }
        if classes == 0 {
            0.0
        } else {
            sum / classes as f64
        }
    }

    /// The attribute's score under the given name.
    pub fn score(&self, name: &str) -> AttributeScore {
        let micro_f1 = self.micro_f1();
        let macro_f1 = self.macro_f1();
        AttributeScore {
            name: name.to_string(),
            micro_f1,
            macro_f1,
            harmonic: harmonic_mean(micro_f1, macro_f1),
            support: self.support,
        }
    }

    fn grow(&mut self, len: usize) {
        if self.true_counts.len() < len {
            self.true_positives.resize(len, 0);
            self.true_counts.resize(len, 0);
            self.pred_counts.resize(len, 0);
        }
    }
}

/// `2ab / (a + b)`, taken as 0 when both are 0 (the limit, and what avoids 0/0).
pub fn harmonic_mean(a: f64, b: f64) -> f64 {
    if a + b == 0.0 {
        0.0
    } else {
        2.0 * a * b / (a + b)
    }
}

/// Scores one attribute from its true labels (`None` = missing, not counted) and the
/// predicted class indices, row by row.
pub fn attribute_score(
    name: &str,
    truth: &[Option<usize>],
    pred: &[usize],
) -> Result<AttributeScore, MetricsError> {
    let mut tally = AttributeTally::new();
    tally.add_batch(name, truth, pred)?;
    Ok(tally.score(name))
}

/// A category's score: the plain mean of the harmonic means of its attributes that have
/// counted rows (0 if none has).
pub fn category_score(name: &str, attributes: Vec<AttributeScore>) -> CategoryScore {
    let score = mean(
        attributes
            .iter()
            .filter(|a| a.support > 0)
            .map(|a| a.harmonic),
    );
    CategoryScore {
        name: name.to_string(),
        score,
        attributes,
    }
}

/// The overall score: the plain mean of the scores of the categories that have counted
/// rows (0 if none has).
pub fn overall_score(categories: Vec<CategoryScore>) -> Score {
    let score = mean(
        categories
            .iter()
            .filter(|c| c.has_support())
            .map(|c| c.score),
    );
    Score { score, categories }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact equality is too strict for sums of fractions; these are all well inside f64.
    const TOLERANCE: f64 = 1e-12;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < TOLERANCE,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn hand_computed_case_with_missing_labels_and_predicted_only_class() {
        let (truth, pred) = hand_case();
        let s = attribute_score("colour", &truth, &pred).expect("same lengths");
        // Counted (truth, pred): (0,0) (1,2) (2,2) (2,1) (1,1) (0,0) (3,0) (2,2) (1,4) (0,0)
        // Right: 6 of 10, so micro F1 = 0.6.
        // Per class, F1 = 2tp / (true + pred):
        //   0: tp 3, true 3, pred 4 -> 6/7      1: tp 1, true 3, pred 2 -> 2/5
        //   2: tp 2, true 3, pred 3 -> 4/6      3: tp 0, true 1, pred 0 -> 0
        //   4: tp 0, true 0, pred 1 -> 0 (only predicted, still counted; the two
        //      predictions of 4 and 3 on unlabelled rows are not counted)
        // Macro F1 = (6/7 + 2/5 + 2/3 + 0 + 0) / 5.
        let macro_f1 = (6.0 / 7.0 + 2.0 / 5.0 + 2.0 / 3.0) / 5.0;
        assert_eq!(s.support, 10);
        assert_close(s.micro_f1, 0.6);
        assert_close(s.macro_f1, macro_f1);
        assert_close(s.harmonic, 2.0 * 0.6 * macro_f1 / (0.6 + macro_f1));
    }

    fn hand_case() -> (Vec<Option<usize>>, Vec<usize>) {
        let truth = vec![
            Some(0),
            Some(1),
            Some(2),
            Some(2),
            None,
            Some(1),
            Some(0),
            Some(3),
            None,
            Some(2),
            Some(1),
            Some(0),
        ];
        (truth, vec![0, 2, 2, 1, 4, 1, 0, 0, 3, 2, 4, 0])
    }

    /// Reference numbers printed by scikit-learn 1.9.1 with:
    ///
    /// ```python
    /// from sklearn.metrics import f1_score
    /// def ref(truth, pred):
    ///     t = [a for a, b in zip(truth, pred) if a is not None]
    ///     p = [b for a, b in zip(truth, pred) if a is not None]
    ///     mi = f1_score(t, p, average="micro")
    ///     ma = f1_score(t, p, average="macro")
    ///     h = 2 * mi * ma / (mi + ma) if mi + ma > 0 else 0.0
    ///     print(len(t), repr(mi), repr(ma), repr(h))
    /// ref([0, 1, 2, 2, None, 1, 0, 3, None, 2, 1, 0],
    ///     [0, 2, 2, 1, 4, 1, 0, 0, 3, 2, 4, 0])
    /// ref([5, 0, 0, 1, 3, None, 3, 3, 2, 0, 1, None, 1, 0, 3, 6, 0, 2, None, 3, 0, 0, 1, 3],
    ///     [5, 0, 1, 1, 3, 2, 0, 3, 2, 0, 0, 4, 1, 0, 3, 0, 0, 3, 6, 3, 7, 0, 1, 2])
    /// ```
    ///
    /// which printed
    ///
    /// ```text
    /// 10 0.6 0.38476190476190475 0.4688588007736944
    /// 21 0.6666666666666666 0.5205627705627706 0.5846247341233668
    /// ```
    #[test]
    fn matches_scikit_learn() {
        let (truth, pred) = hand_case();
        let s = attribute_score("colour", &truth, &pred).expect("same lengths");
        assert_eq!(s.support, 10);
        assert_close(s.micro_f1, 0.6);
        assert_close(s.macro_f1, 0.38476190476190475);
        assert_close(s.harmonic, 0.4688588007736944);

        let truth = [
            Some(5),
            Some(0),
            Some(0),
            Some(1),
            Some(3),
            None,
            Some(3),
            Some(3),
            Some(2),
            Some(0),
            Some(1),
            None,
            Some(1),
            Some(0),
            Some(3),
            Some(6),
            Some(0),
            Some(2),
            None,
            Some(3),
            Some(0),
            Some(0),
            Some(1),
            Some(3),
        ];
        let pred = [
            5, 0, 1, 1, 3, 2, 0, 3, 2, 0, 0, 4, 1, 0, 3, 0, 0, 3, 6, 3, 7, 0, 1, 2,
        ];
        let s = attribute_score("pattern", &truth, &pred).expect("same lengths");
        assert_eq!(s.support, 21);
        assert_close(s.micro_f1, 0.6666666666666666);
        assert_close(s.macro_f1, 0.5205627705627706);
        assert_close(s.harmonic, 0.5846247341233668);
    }

    #[test]
    fn missing_labels_do_not_count() {
        let with_missing = attribute_score(
            "sleeve",
            &[Some(1), None, Some(0), None, Some(1)],
            &[1, 0, 0, 2, 0],
        )
        .expect("same lengths");
        let without =
            attribute_score("sleeve", &[Some(1), Some(0), Some(1)], &[1, 0, 0]).expect("same");
        assert_eq!(with_missing, without);
        assert_eq!(with_missing.support, 3);
    }

    #[test]
    fn perfect_predictions_score_one() {
        let truth = [Some(0), Some(2), Some(2), None, Some(1)];
        let s = attribute_score("neck", &truth, &[0, 2, 2, 1, 1]).expect("same lengths");
        assert_close(s.micro_f1, 1.0);
        assert_close(s.macro_f1, 1.0);
        assert_close(s.harmonic, 1.0);
    }

    #[test]
    fn all_wrong_predictions_score_zero() {
        let truth = [Some(0), Some(1), Some(2)];
        let s = attribute_score("neck", &truth, &[1, 2, 0]).expect("same lengths");
        assert_eq!(s.support, 3);
        assert_eq!((s.micro_f1, s.macro_f1, s.harmonic), (0.0, 0.0, 0.0));
    }

    #[test]
    fn attribute_without_labels_has_zero_support_and_is_left_out() {
        let empty = attribute_score("border", &[None, None], &[0, 1]).expect("same lengths");
        assert_eq!(empty.support, 0);
        assert_eq!(
            (empty.micro_f1, empty.macro_f1, empty.harmonic),
            (0.0, 0.0, 0.0)
        );

        let perfect = attribute_score("colour", &[Some(0)], &[0]).expect("same lengths");
        let category = category_score("Sarees", vec![perfect, empty]);
        // Only "colour" counts: mean of [1.0], not of [1.0, 0.0].
        assert_close(category.score, 1.0);

        let unlabelled = category_score(
            "Kurtis",
            vec![attribute_score("neck", &[None], &[0]).expect("same lengths")],
        );
        assert_eq!(unlabelled.score, 0.0);
        assert!(!unlabelled.has_support());
        let overall = overall_score(vec![category, unlabelled]);
        assert_close(overall.score, 1.0);
        assert_eq!(overall_score(Vec::new()).score, 0.0);
    }

    #[test]
    fn length_mismatch_names_the_attribute() {
        let err = attribute_score("sleeve_length", &[Some(0), None], &[0]).unwrap_err();
        assert_eq!(
            err,
            MetricsError::LengthMismatch {
                attribute: "sleeve_length".into(),
                truth: 2,
                pred: 1
            }
        );
        assert!(err.to_string().contains("sleeve_length"));
    }

    #[test]
    fn tally_accumulated_over_batches_and_merged_equals_one_pass() {
        let truth = [Some(0), Some(1), None, Some(2), Some(1), Some(0), Some(3)];
        let pred = [0, 1, 2, 1, 1, 3, 3];
        let whole = attribute_score("a", &truth, &pred).expect("same lengths");

        let mut first = AttributeTally::with_classes(2);
        first.add_batch("a", &truth[..3], &pred[..3]).expect("same");
        let mut second = AttributeTally::new();
        second
            .add_batch("a", &truth[3..], &pred[3..])
            .expect("same");
        first.merge(&second);
        assert_eq!(first.score("a"), whole);
    }

    #[test]
    fn category_and_overall_are_plain_means() {
        let a = |name: &str, harmonic: f64| AttributeScore {
            name: name.into(),
            micro_f1: harmonic,
            macro_f1: harmonic,
            harmonic,
            support: 1,
        };
        // (0.5 + 1.0) / 2 = 0.75 and (0.25 + 0.5 + 0.75) / 3 = 0.5; overall (0.75 + 0.5) / 2.
        let men = category_score("Men Tshirts", vec![a("x", 0.5), a("y", 1.0)]);
        let sarees = category_score("Sarees", vec![a("x", 0.25), a("y", 0.5), a("z", 0.75)]);
        assert_close(men.score, 0.75);
        assert_close(sarees.score, 0.5);
        assert_close(overall_score(vec![men, sarees]).score, 0.625);
    }

    #[test]
    fn json_matches_the_contract() {
        let score = overall_score(vec![category_score(
            "Men Tshirts",
            vec![AttributeScore {
                name: "neck".into(),
                micro_f1: 1.0,
                macro_f1: 0.5,
                harmonic: 0.25,
                support: 3,
            }],
        )]);
        let json = serde_json::to_string(&score).expect("serialisable");
        assert_eq!(
            json,
            r#"{"score":0.25,"categories":[{"name":"Men Tshirts","score":0.25,"attributes":[{"name":"neck","micro_f1":1.0,"macro_f1":0.5,"harmonic":0.25,"support":3}]}]}"#
        );
        let back: Score = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, score);
    }

    #[test]
    fn two_rows_by_hand() {
        let s = attribute_score("colour", &[Some(0), Some(1)], &[0, 0]).expect("same lengths");
        // micro 1/2; class 0: 2*1/(1+2) = 2/3, class 1: 0, macro 1/3;
        // harmonic 2 * 1/2 * 1/3 / (1/2 + 1/3) = (1/3) / (5/6) = 0.4.
        assert_close(s.micro_f1, 0.5);
        assert_close(s.macro_f1, 1.0 / 3.0);
        assert_close(s.harmonic, 0.4);
    }
}
