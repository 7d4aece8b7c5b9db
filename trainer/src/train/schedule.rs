//! Learning-rate schedules within a stage: the reference's reduce-on-plateau (see
//! [`super::plateau`]); a per-step warm-up followed by a cosine decay, which suits
//! short runs from scratch: the plateau rule cannot cut the rate before a stage has
//! stalled for `patience` epochs, and a run of four epochs never gets there; or the
//! plateau rule's rate held until the last fifth of the stage and then brought down in
//! a straight line, which keeps the fast learning of a constant rate for most of the
//! run and still ends on a low one. The last one needs to know only where the stage
//! ends, not its length from the start, so it also suits a stage whose length the
//! time budget sets as it goes.

use serde::{Deserialize, Serialize};

/// How the learning rate moves during a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Constant, halved when the validation score stops improving (the reference).
    #[default]
    Plateau,
    /// Linear warm-up over the first 5% of the stage's steps, then a cosine decay to
    /// 1% of the rate at its last step.
    Cosine,
    /// The plateau rule's rate until the last fifth of the stage's steps, then a
    /// linear decay to 1% of it at the last step.
    Anneal,
}

/// Share of a stage's steps spent warming up under [`LrSchedule::Cosine`].
const WARMUP_SHARE: f64 = 0.05;
/// Where the cosine ends, as a share of the peak rate.
const FINAL_SHARE: f64 = 0.01;

/// Share of a stage's steps, at its end, over which [`LrSchedule::Anneal`] decays.
const ANNEAL_SHARE: f64 = 0.2;

/// The multiplier of the rate at `step` (from 0) of a stage of `total` steps under
/// [`LrSchedule::Anneal`]: 1 until the decay, then falling linearly to the floor at
/// the last step.
pub fn anneal_factor(step: usize, total: usize) -> f64 {
    if total <= 1 {
        return 1.0;
    }
    let span = ((total as f64 * ANNEAL_SHARE).round() as usize).max(1);
    // Steps still to take after this one: `span - 1` at the decay's first step.
    let left = (total - 1).saturating_sub(step);
    if left >= span {
        return 1.0;
    }
    let t = if span == 1 {
        1.0
    } else {
        1.0 - left as f64 / (span - 1) as f64
    };
    1.0 - (1.0 - FINAL_SHARE) * t
}

/// The multiplier of the peak rate at `step` (from 0) of a stage of `total` steps.
pub fn cosine_factor(step: usize, total: usize) -> f64 {
    if total <= 1 {
        return 1.0;
    }
    let warmup = ((total as f64 * WARMUP_SHARE).round() as usize).max(1);
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    // The last step (`total - 1`) lands exactly on the floor.
    let span = (total - warmup).saturating_sub(1).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    FINAL_SHARE + (1.0 - FINAL_SHARE) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let total = 200;
        // Warm-up: 10 steps rising linearly to the peak.
        assert!((cosine_factor(0, total) - 0.1).abs() < 1e-12);
        assert!((cosine_factor(9, total) - 1.0).abs() < 1e-12);
        // Then it only falls, reaching the floor at the end.
        let values: Vec<f64> = (10..total).map(|s| cosine_factor(s, total)).collect();
        assert!(values.windows(2).all(|w| w[1] <= w[0]));
        let middle = cosine_factor(10 + 189 / 2, total);
        assert!((middle - (FINAL_SHARE + (1.0 - FINAL_SHARE) * 0.5)).abs() < 0.01);
        assert!((cosine_factor(total - 1, total) - FINAL_SHARE).abs() < 1e-12);
        // Short stages too: five steps, one of warm-up, the last on the floor.
        assert!((cosine_factor(4, 5) - FINAL_SHARE).abs() < 1e-12);
        assert!(cosine_factor(1, 5) == 1.0 && cosine_factor(2, 5) < 1.0);
    }

    #[test]
    fn a_single_step_stage_uses_the_peak() {
        assert_eq!(cosine_factor(0, 1), 1.0);
        assert_eq!(cosine_factor(0, 0), 1.0);
        assert_eq!(anneal_factor(0, 1), 1.0);
        assert_eq!(anneal_factor(0, 0), 1.0);
    }

    #[test]
    fn anneal_holds_then_falls_in_a_line_to_the_floor() {
        let total = 100;
        // 81 steps at the full rate (the decay's first step still on it), then 19
        // falling evenly, the last on the floor.
        assert!((0..80).all(|s| anneal_factor(s, total) == 1.0));
        assert!(anneal_factor(80, total) == 1.0);
        assert!(anneal_factor(81, total) < 1.0);
        assert!((anneal_factor(99, total) - FINAL_SHARE).abs() < 1e-12);
        let falls: Vec<f64> = (80..100)
            .map(|s| anneal_factor(s, total) - anneal_factor(s + 1, total))
            .take(19)
            .collect();
        assert!(falls
            .iter()
            .all(|d| (d - falls[0]).abs() < 1e-12 && *d > 0.0));
        // Past the stage's end (a budget that shrank the stage) it stays on the floor.
        assert!((anneal_factor(120, total) - FINAL_SHARE).abs() < 1e-12);
        // A short stage: one step of decay lands on the floor.
        assert_eq!(anneal_factor(3, 5), 1.0);
        assert!((anneal_factor(4, 5) - FINAL_SHARE).abs() < 1e-12);
    }
}
