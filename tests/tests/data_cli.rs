//! End-to-end: the real `trainer` binary writes a synthetic data set, reads it back and
//! reports bad input as one clear error line.

use std::process::Command;
use tests::{trainer_bin, TempDir};

#[test]
fn synth_then_check_data_reads_every_row() {
    let dir = TempDir::new("synth_e2e");
    let data = dir.0.join("data");
    let sheet = dir.0.join("sheet.png");
    let out = Command::new(trainer_bin())
        .args(["synth", "--out"])
        .arg(&data)
        .args([
            "--train-per-category",
            "8",
            "--test-per-category",
            "3",
            "--size",
            "48",
            "--seed",
            "5",
            "--contact-sheet",
        ])
        .arg(&sheet)
        .output()
        .expect("run trainer synth");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("wrote 40 train and 15 test images (48 px)"),
        "{stdout}"
    );
    for f in [
        "train.csv",
        "test.csv",
        "test_labels.csv",
        "category_attributes.parquet",
        "train_images/000039.jpg",
        "test_images/000014.jpg",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    assert!(sheet.exists());

    let train = std::fs::read_to_string(data.join("train.csv")).unwrap();
    assert!(train.starts_with(
        "id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10\n"
    ));
    assert_eq!(train.lines().count(), 41);
    let test = std::fs::read_to_string(data.join("test.csv")).unwrap();
    assert!(test.starts_with("id,Category\n0,Men Tshirts\n"), "{test}");

    let report = dir.0.join("report.csv");
    let out = Command::new(trainer_bin())
        .args(["check-data", "--data"])
        .arg(&data)
        .args(["--size", "32", "--report"])
        .arg(&report)
        .output()
        .expect("run trainer check-data");
    // The data layer reports on stderr, so that commands printing JSON keep stdout clean.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("train: 40 of 40 rows have a usable image"),
        "{stderr}"
    );
    assert!(
        stderr.contains("test: 15 of 15 rows have a usable image"),
        "{stderr}"
    );
    // Nothing skipped; with 8 training rows per category some test labels are classes
    // training never saw, and those are reported as dropped labels instead.
    assert!(!stderr.contains("row(s) skipped"), "{stderr}");
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(report_text.starts_with("split,id,file,action,reason\n"));
}

#[test]
fn bad_input_is_one_clear_error_line_and_a_failure_code() {
    let dir = TempDir::new("bad_e2e");
    std::fs::write(
        dir.0.join("train.csv"),
        "id,Category,len,attr_1\n0,Jeans,1,blue\n",
    )
    .unwrap();
    let out = Command::new(trainer_bin())
        .args(["check-data", "--data"])
        .arg(&dir.0)
        .output()
        .expect("run trainer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    // The parquet file is missing (warning), and then the header lacks attr_2.
    assert!(
        stderr.contains("warning:") && stderr.contains("category_attributes.parquet is missing"),
        "{stderr}"
    );
    assert!(
        error_lines[0].contains("train.csv") && error_lines[0].contains("attr_2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
