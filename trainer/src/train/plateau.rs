//! Reduce-on-plateau learning rate: Burn 0.21 has no such scheduler, so here is a small
//! one driven by the validation score (higher is better).

use serde::{Deserialize, Serialize};

/// Settings of [`Plateau`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauConfig {
    /// The rate is multiplied by this after `patience` epochs without improvement.
    pub factor: f64,
    /// Epochs without improvement tolerated before the rate is cut.
    pub patience: usize,
    /// The rate never goes below this.
    pub min_lr: f64,
    /// A score must beat the best by more than this to count as an improvement.
    pub threshold: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            factor: 0.5,
            patience: 1,
            min_lr: 1e-6,
            threshold: 1e-4,
        }
    }
}

/// The scheduler's state (saved in checkpoints so a resumed run continues it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub config: PlateauConfig,
    pub lr: f64,
    /// Best score seen so far, if any.
    pub best: Option<f64>,
    /// Epochs since the best score.
    pub bad_epochs: usize,
}

impl Plateau {
    pub fn new(lr: f64, config: PlateauConfig) -> Self {
        Self {
            config,
            lr,
            best: None,
            bad_epochs: 0,
        }
    }

    /// Records an epoch's validation score; returns true when it is a new best.
    pub fn step(&mut self, score: f64) -> bool {
        let improved = match self.best {
            None => true,
            Some(best) => score > best + self.config.threshold,
        };
        if improved {
            self.best = Some(score);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
            if self.bad_epochs > self.config.patience {
                self.lr = (self.lr * self.config.factor).max(self.config.min_lr);
                self.bad_epochs = 0;
            }
        }
        improved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(patience: usize) -> PlateauConfig {
        PlateauConfig {
            factor: 0.1,
            patience,
            min_lr: 1e-4,
            threshold: 1e-3,
        }
    }

    #[test]
    fn keeps_the_rate_while_improving() {
        let mut p = Plateau::new(1e-2, config(0));
        assert!(p.step(0.5));
        assert!(p.step(0.6));
        assert!(p.step(0.7));
        assert_eq!(p.lr, 1e-2);
        assert_eq!(p.best, Some(0.7));
    }

    #[test]
    fn cuts_after_patience_is_exhausted_and_stops_at_the_floor() {
        let mut p = Plateau::new(1e-2, config(2));
        p.step(0.8);
        assert!(!p.step(0.8)); // 1 bad epoch
        assert!(!p.step(0.7)); // 2 bad epochs: still within patience
        assert_eq!(p.lr, 1e-2);
        p.step(0.79); // 3rd: cut
        assert!((p.lr - 1e-3).abs() < 1e-15);
        for _ in 0..3 {
            p.step(0.1);
        }
        assert!((p.lr - 1e-4).abs() < 1e-15);
        for _ in 0..9 {
            p.step(0.1);
        }
        assert_eq!(p.lr, 1e-4, "never below min_lr");
    }

    #[test]
    fn tiny_gains_below_the_threshold_are_not_improvements() {
        let mut p = Plateau::new(1.0, config(0));
        p.step(0.5);
        assert!(!p.step(0.5005));
        assert!((p.lr - 0.1).abs() < 1e-12);
        assert!(p.step(0.6));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut p = Plateau::new(3e-4, PlateauConfig::default());
        p.step(0.4);
        p.step(0.3);
        let back: Plateau = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
