//! Learning-rate schedules within a stage: the reference's reduce-on-plateau (see
//! [`super::plateau`]), or a per-step warm-up followed by a cosine decay, which suits
//! short runs from scratch: the plateau rule cannot cut the rate before a stage has
//! stalled for `patience` epochs, and a run of four epochs never gets there.

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
}

/// Share of a stage's steps spent warming up under [`LrSchedule::Cosine`].
const WARMUP_SHARE: f64 = 0.05;
/// Where the cosine ends, as a share of the peak rate.
const FINAL_SHARE: f64 = 0.01;

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
    }
}
