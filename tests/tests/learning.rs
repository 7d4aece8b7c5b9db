//! Training learns: on a small synthetic set, the validation score of the trained model
//! is clearly above that of the same network before training (zero epochs: the
//! initial weights, seeded identically). The numbers this test prints are the ones in
//! BENCHMARKS.md ("Training learns").

use std::path::Path;
use tests::*;

fn train(data: &Path, run: &Path, phase1: &str, phase2: &str) {
    trainer_ok(&[
        "train",
        "--data",
        s(data),
        "--out",
        s(run),
        "--backbone",
        "default-small",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--head-dim",
        "32",
        "--lr",
        "3e-3",
        "--phase1-epochs",
        phase1,
        "--phase2-epochs",
        phase2,
        "--categories",
        "Men Tshirts",
        "--device",
        "cpu",
        "--quiet",
        "--seed",
        "11",
    ]);
}

fn score(run: &Path) -> f64 {
    let out = trainer_ok(&["evaluate", "--run", s(run), "--json", "--device", "cpu"]);
    json(&out)["score"].as_f64().expect("a score")
}

#[test]
fn trained_model_scores_clearly_above_the_untrained_one() {
    let tmp = TempDir::new("learning");
    let data = tmp.0.join("data");
    trainer_ok(&[
        "synth",
        "--out",
        s(&data),
        "--train-per-category",
        "160",
        "--test-per-category",
        "16",
        "--size",
        "32",
        "--seed",
        "4",
    ]);
    let untrained = tmp.0.join("untrained");
    train(&data, &untrained, "0", "0");
    let before = score(&untrained);
    let trained = tmp.0.join("trained");
    train(&data, &trained, "10", "2");
    let after = score(&trained);
    println!("validation score: untrained {before:.4}, trained {after:.4}");
    assert!(
        after > before + 0.15,
        "training did not learn: untrained {before:.4}, trained {after:.4}"
    );
}
