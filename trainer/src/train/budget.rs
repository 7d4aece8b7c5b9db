//! `--time-budget MINUTES`: a run that should end within a given time of the process's
//! start, whatever the machine.
//!
//! Only the shared stage's length moves: `--shared-epochs` becomes an upper bound, and
//! after each of the stage's epochs the mean wall time of its epochs so far (training,
//! validation and checkpoints) prices everything still to come, which sets how many
//! epochs the stage runs in all. Planning again after every epoch, rather than once
//! from the first, follows a machine whose speed drifts: on the development machine one
//! epoch's time moved by 15 % within half an hour, and a plan fixed after the first
//! epoch once left 2.7 minutes unused and once ended 0.15 s over (BENCHMARKS.md). The
//! phases are priced in shared epochs by the images they pass: a phase-one epoch over
//! every category's rows passes as many as a shared epoch; a phase-two epoch runs the
//! frozen backbone forward only and was measured at 0.55-1.0 of a phase-one epoch in the
//! default job's log, so it is counted as [`PHASE2_SHARE`]. What follows the phases (the
//! final table, the curves, and in the default job the export and the test-image score)
//! is counted as [`TAIL_SHARE`] of an epoch. Every epoch to come is priced
//! [`SLOWER_SHARE`] above the mean so far. The plan is kept in the stage's `state.json`;
//! a resumed stage keeps the plan it finds there (its own clock started late), so
//! `--resume` runs the epochs the interrupted process had planned.

use super::config::TrainConfig;
use std::sync::OnceLock;
use std::time::Instant;

/// A phase-two epoch's time as a share of a phase-one epoch's (see the module docs).
pub const PHASE2_SHARE: f64 = 0.75;
/// The time after the last phase, as a share of one shared epoch's.
pub const TAIL_SHARE: f64 = 0.5;
/// How much slower than the first epoch the plan prices every epoch still to come:
/// on a busy machine the later epochs averaged a few per cent longer (the fifteenth
/// session's default job planned 13 epochs to end 6.7 s inside its 15 minutes from a
/// 46.9 s first epoch; its epochs trained for 47.1 s on average against the first's
/// 45.5 s, and it ended 0.15 s over).
pub const SLOWER_SHARE: f64 = 0.05;

/// When this process started (the first call; `main` makes it first thing).
pub fn process_clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The per-category phases of `config`, in shared epochs' time.
pub fn phase_work(config: &TrainConfig) -> f64 {
    config.phase1_epochs as f64
        + PHASE2_SHARE * (config.phase2_epochs * config.phase2_rounds) as f64
}

/// How many shared epochs in all (at least the `done` already run, at most
/// `max_epochs`) fit in `budget_s` seconds, `elapsed_s` of which have passed at the end
/// of the last epoch run, when an epoch takes `epoch_s` (the mean so far);
/// `phase_epochs` is [`phase_work`].
pub fn shared_epochs_within(
    budget_s: f64,
    elapsed_s: f64,
    (done, epoch_s): (usize, f64),
    max_epochs: usize,
    phase_epochs: f64,
) -> usize {
    let epoch_s = epoch_s * (1.0 + SLOWER_SHARE);
    let after = (phase_epochs + TAIL_SHARE) * epoch_s;
    let left = budget_s - elapsed_s - after;
    let more = if epoch_s > 0.0 && left > 0.0 {
        (left / epoch_s).floor() as usize
    } else {
        0
    };
    (done + more).min(max_epochs).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epochs_that_fit_are_counted_from_the_first_one() {
        // 900 s budget, 75 s gone after a 60 s first epoch, priced at 63 s from now
        // on; phases of 5.5 epochs and the tail of half a one: 900 - 75 - 378 = 447 s
        // left, 7 more epochs.
        assert_eq!(shared_epochs_within(900.0, 75.0, (1, 60.0), 14, 5.5), 8);
        // Capped at --shared-epochs.
        assert_eq!(shared_epochs_within(900.0, 75.0, (1, 10.0), 14, 5.5), 14);
        // Nothing left (or already over): the epoch run is the only one.
        assert_eq!(shared_epochs_within(100.0, 75.0, (1, 60.0), 14, 5.5), 1);
        assert_eq!(shared_epochs_within(10.0, 75.0, (1, 60.0), 14, 5.5), 1);
        // Exactly one more epoch's time left, at 42 s for a 40 s first epoch.
        assert_eq!(
            shared_epochs_within(75.0 + 42.0 * 7.0, 75.0, (1, 40.0), 14, 5.5),
            2
        );
        // Time for one more at the first epoch's pace but not at the slower one.
        assert_eq!(
            shared_epochs_within(75.0 + 41.0 * 7.0, 75.0, (1, 40.0), 14, 5.5),
            1
        );
        // An epoch too fast to time does not divide by zero.
        assert_eq!(shared_epochs_within(900.0, 1.0, (1, 0.0), 14, 5.5), 1);
    }

    #[test]
    fn later_plans_count_the_epochs_already_run() {
        // Five epochs of 40 s run, 210 s gone: 900 - 210 - 6 x 42 = 438 s left, 10
        // more at 42 s each.
        assert_eq!(shared_epochs_within(900.0, 210.0, (5, 40.0), 30, 5.5), 15);
        // A slower machine than planned: the plan shrinks, but never below what ran.
        assert_eq!(shared_epochs_within(900.0, 700.0, (12, 55.0), 30, 5.5), 12);
        // The cap still holds, also below the epochs run (a resumed run given a
        // smaller --shared-epochs).
        assert_eq!(shared_epochs_within(900.0, 100.0, (5, 10.0), 8, 5.5), 8);
        assert_eq!(shared_epochs_within(900.0, 100.0, (5, 10.0), 3, 5.5), 3);
    }

    #[test]
    fn phases_are_priced_in_shared_epochs() {
        let mut config = crate::default_job::default_train_config(
            std::path::Path::new("data"),
            &crate::default_job::default_synth(),
        )
        .unwrap();
        config.phase1_epochs = 4;
        config.phase2_epochs = 2;
        config.phase2_rounds = 3;
        assert_eq!(phase_work(&config), 4.0 + 0.75 * 6.0);
    }
}
