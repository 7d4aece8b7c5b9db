//! The whole pipeline through the real binary, at toy sizes: synth -> train -> evaluate
//! -> predict -> export-web; resume after a kill; training learns; bad input.

use std::path::Path;
use tests::*;

/// Small synthetic data set shared by the tests of this file.
fn synth(dir: &Path, per_category: &str, size: &str) {
    trainer_ok(&[
        "synth",
        "--out",
        s(dir),
        "--train-per-category",
        per_category,
        "--test-per-category",
        "12",
        "--size",
        size,
        "--seed",
        "3",
    ]);
}

/// Tiny training settings: atto at 32 px, head width 32.
fn tiny_train_args<'a>(data: &'a Path, run: &'a Path, p1: &'a str, p2: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(run),
        "--backbone",
        "atto",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--head-dim",
        "32",
        "--phase1-epochs",
        p1,
        "--phase2-epochs",
        p2,
        "--categories",
        "Men Tshirts,Kurtis",
        "--device",
        "cpu",
        "--quiet",
        "--seed",
        "5",
    ]
}

#[test]
fn synth_train_evaluate_predict_export() {
    let tmp = TempDir::new("pipeline");
    let root = tmp.0.clone();
    let data = root.join("data");
    let run = root.join("run");
    synth(&data, "40", "48");
    let mut args = tiny_train_args(&data, &run, "1", "1");
    args.extend(["--lr-schedule", "cosine", "--lr", "0.002"]);
    trainer_ok(&args);
    for file in [
        "run.json",
        "taxonomy.json",
        "train_log.jsonl",
        "curves.png",
        "data_report.csv",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    for slug in ["men-tshirts", "kurtis"] {
        for file in [
            "best.safetensors",
            "last.mpk",
            "model.json",
            "state.json",
            "optimizer.mpk",
        ] {
            assert!(run.join(slug).join(file).is_file(), "{slug}/{file} missing");
        }
    }
    // One log line per epoch: 2 categories x (1 + 1) epochs.
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    // Under the cosine schedule each stage (one epoch here) ends at 1% of the peak.
    for line in log.lines() {
        let lr = serde_json::from_str::<serde_json::Value>(line).unwrap()["lr"]
            .as_f64()
            .unwrap();
        assert!((lr - 0.002 * 0.01).abs() < 1e-9, "last-step rate {lr}");
    }
    let config = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&config).unwrap()["lr_schedule"],
        "cosine"
    );

    // evaluate --json: the contract's shape.
    let out = trainer_ok(&["evaluate", "--run", s(&run), "--json", "--device", "cpu"]);
    let v = json(&out);
    assert_eq!(keys(&v), ["categories", "score"]);
    assert!(
        out.stdout.starts_with(b"{\"score\":"),
        "the contract's order"
    );
    let categories = v["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 2);
    for c in categories {
        assert_eq!(keys(c), ["attributes", "name", "score"]);
        for a in c["attributes"].as_array().unwrap() {
            assert_eq!(
                keys(a),
                ["harmonic", "macro_f1", "micro_f1", "name", "support"]
            );
            let h = a["harmonic"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&h));
        }
    }
    assert_eq!(categories[0]["name"], "Men Tshirts");
    assert_eq!(categories[0]["attributes"].as_array().unwrap().len(), 5);

    // evaluate --split test scores the rows of test_labels.csv: each attribute's
    // support is the number of its labelled cells there, less any label that training
    // never saw (dropped with a warning); far more than the 4 validation rows.
    let out = trainer_ok(&[
        "evaluate",
        "--run",
        s(&run),
        "--split",
        "test",
        "--json",
        "--device",
        "cpu",
    ]);
    let v = json(&out);
    let labels = std::fs::read_to_string(data.join("test_labels.csv")).unwrap();
    for c in v["categories"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        for (k, a) in c["attributes"].as_array().unwrap().iter().enumerate() {
            let labelled = labels
                .lines()
                .skip(1)
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|f| f[1] == name && !f[3 + k].trim().is_empty())
                .count();
            let support = a["support"].as_u64().unwrap() as usize;
            assert!(
                support <= labelled && support * 4 >= labelled * 3,
                "{name} {a}: {labelled} labelled"
            );
            assert!(support > 4, "{name} {a}");
        }
    }
    // Without test_labels.csv there is nothing to score: a clear error.
    let hidden = data.join("test_labels.hidden");
    std::fs::rename(data.join("test_labels.csv"), &hidden).unwrap();
    let out = trainer(&[
        "evaluate",
        "--run",
        s(&run),
        "--split",
        "test",
        "--device",
        "cpu",
    ]);
    std::fs::rename(&hidden, data.join("test_labels.csv")).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("test_labels.csv") && err.contains("--split val"),
        "{err}"
    );

    // predict --category: labels from the taxonomy, probabilities summing to one.
    let image = data.join("test_images/000000.jpg");
    let out = trainer_ok(&[
        "predict",
        "--run",
        s(&run),
        "--category",
        "Men Tshirts",
        s(&image),
        "--json",
        "--device",
        "cpu",
    ]);
    let v = json(&out);
    assert_eq!(keys(&v), ["predictions"]);
    let p = &v["predictions"][0];
    assert_eq!(keys(p), ["attributes", "category", "image"]);
    assert!(
        out.stdout.starts_with(b"{\"predictions\":[{\"image\":"),
        "the contract's order"
    );
    assert_eq!(p["category"], "Men Tshirts");
    let attrs = p["attributes"].as_array().unwrap();
    assert_eq!(attrs.len(), 5);
    for a in attrs {
        assert_eq!(keys(a), ["label", "name", "prob", "probs"]);
        let probs = a["probs"].as_object().unwrap();
        let total: f64 = probs.values().map(|x| x.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(probs.contains_key(a["label"].as_str().unwrap()));
    }

    // predict --data --out: a row for every test.csv row.
    let submission = root.join("submission.csv");
    trainer_ok(&[
        "predict",
        "--run",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&submission),
        "--device",
        "cpu",
    ]);
    let text = std::fs::read_to_string(&submission).unwrap();
    let test_rows = std::fs::read_to_string(data.join("test.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(text.lines().count(), test_rows, "header + every test row");
    assert!(text.starts_with("id,Category,len,attr_1,"));
    assert!(!text.contains(",,"), "no blank cell");

    // export-web: manifest + weights, sizes as written.
    let web = root.join("web");
    trainer_ok(&[
        "export-web",
        "--run",
        s(&run),
        "--out",
        s(&web),
        "--precision",
        "f32",
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(web.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["precision"], "f32");
    for c in manifest["categories"].as_array().unwrap() {
        let file = web.join(c["file"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            c["bytes"].as_u64().unwrap()
        );
    }
    let f16 = root.join("web16");
    trainer_ok(&[
        "export-web",
        "--run",
        s(&run),
        "--out",
        s(&f16),
        "--precision",
        "f16",
    ]);
    let size = |dir: &Path| {
        std::fs::metadata(dir.join("men-tshirts.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size(&f16) * 10 < size(&web) * 6, "f16 is about half of f32");
}

/// Starts `trainer` with `args` and kills it once `state` records a finished first
/// epoch (or lets it be if it ends first).
fn kill_after_first_epoch(args: &[&str], state: &Path) {
    let mut child = std::process::Command::new(trainer_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::fs::read_to_string(state)
        .map(|s| !s.contains("\"epochs_done\": 1"))
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint in {} within 300 s",
            state.display()
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn resume_after_a_kill_gives_the_uninterrupted_result() {
    let tmp = TempDir::new("resume");
    let root = tmp.0.clone();
    let data = root.join("data");
    synth(&data, "30", "32");
    // Batches of 8 as one part, then with a running average of the weights (which
    // the checkpoint must carry too) and cut into three uneven parts (3, 3, 2 rows),
    // whatever the machine's thread count.
    resume_matches_the_uninterrupted_run(&data, &root.join("plain"), &["--batch-parts", "1"]);
    resume_matches_the_uninterrupted_run(
        &data,
        &root.join("ema"),
        &["--ema-decay", "0.9", "--batch-parts", "3"],
    );
}

fn resume_matches_the_uninterrupted_run(data: &Path, root: &Path, extra: &[&str]) {
    // Uninterrupted.
    let straight = root.join("straight");
    let mut args = tiny_train_args(data, &straight, "3", "1");
    args.extend(extra);
    trainer_ok(&args);
    // Killed once its first epoch checkpoint is on disk, then resumed.
    let killed = root.join("killed");
    let mut args = tiny_train_args(data, &killed, "3", "1");
    args.extend(extra);
    kill_after_first_epoch(&args, &killed.join("men-tshirts/state.json"));
    let mut resume = args.clone();
    resume.push("--resume");
    trainer_ok(&resume);
    for slug in ["men-tshirts", "kurtis"] {
        let a = std::fs::read(straight.join(slug).join("best.safetensors")).unwrap();
        let b = std::fs::read(killed.join(slug).join("best.safetensors")).unwrap();
        assert!(
            a == b,
            "{slug}: resumed weights differ from the uninterrupted run's"
        );
    }
    let eval = |run: &Path| {
        json(&trainer_ok(&[
            "evaluate",
            "--run",
            s(run),
            "--json",
            "--device",
            "cpu",
        ]))["score"]
            .clone()
    };
    assert_eq!(eval(&straight), eval(&killed));
}

/// The tensors of a safetensors file whose names start with `prefix`, as raw bytes
/// by name (the format: an 8-byte little-endian header length, a JSON header of
/// names, dtypes, shapes and byte ranges, then the data).
fn safetensors_with_prefix(path: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let data = &bytes[8 + len..];
    let mut out: Vec<(String, Vec<u8>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, t)| {
            let range = &t["data_offsets"];
            let (a, b) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
            (name.clone(), data[a as usize..b as usize].to_vec())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn shared_stage_trains_one_backbone_and_resumes_to_the_same_result() {
    let tmp = TempDir::new("shared");
    let root = tmp.0.clone();
    let data = root.join("data");
    synth(&data, "30", "32");
    let with_shared = |run: &Path| {
        let mut args = tiny_train_args(&data, run, "1", "1");
        // With a running average of the weights: what the stage hands on, and what
        // its checkpoint must carry for the resumed run below.
        args.extend(["--shared-epochs", "2", "--ema-decay", "0.9"]);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let straight = root.join("straight");
    let args = with_shared(&straight);
    trainer_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Both categories start their own phases from one backbone, with their own heads.
    let men = straight.join("shared/men-tshirts.safetensors");
    let kurtis = straight.join("shared/kurtis.safetensors");
    let men_backbone = safetensors_with_prefix(&men, "backbone.");
    assert!(
        men_backbone.len() > 10,
        "the start weights hold the backbone"
    );
    assert_eq!(
        men_backbone,
        safetensors_with_prefix(&kurtis, "backbone."),
        "the categories' starting backbones differ: the stage did not share it"
    );
    let heads = |p: &Path| safetensors_with_prefix(p, "heads.");
    assert_ne!(heads(&men), heads(&kurtis));
    // The stage logged each category's validation after each of its epochs, and the
    // per-category phases followed.
    let log = std::fs::read_to_string(straight.join("train_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for category in ["Men Tshirts", "Kurtis"] {
        let epochs: Vec<u64> = lines
            .iter()
            .filter(|l| l["stage"] == "shared" && l["category"] == category)
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, [1, 2], "{category}: shared epochs in the log");
        assert!(lines
            .iter()
            .any(|l| l["stage"] == "phase1" && l["category"] == category));
    }
    // Phase one really starts from the shared weights: its first checkpoint is not
    // the freshly initialised network a run without the stage would train.
    let plain = root.join("plain");
    trainer_ok(&tiny_train_args(&data, &plain, "1", "1"));
    assert_ne!(
        std::fs::read(plain.join("men-tshirts/best.safetensors")).unwrap(),
        std::fs::read(straight.join("men-tshirts/best.safetensors")).unwrap()
    );

    // With a budget the first epoch already used up, the stage stops after it, says
    // so, keeps that choice in its state, and the phases still run.
    let budgeted = root.join("budgeted");
    let mut args = tiny_train_args(&data, &budgeted, "1", "1");
    args.extend(["--shared-epochs", "4", "--time-budget", "0.0001"]);
    let out = String::from_utf8_lossy(&trainer_ok(&args).stdout).to_string();
    assert!(out.contains("1 of 4 epochs fit"), "{out}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(budgeted.join("shared/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["planned_epochs"], 1);
    assert_eq!(state["epochs_done"], 1);
    let log = std::fs::read_to_string(budgeted.join("train_log.jsonl")).unwrap();
    let shared = log
        .lines()
        .filter(|l| l.contains("\"stage\":\"shared\""))
        .count();
    assert_eq!(
        shared, 2,
        "one shared epoch for each of the two categories:\n{log}"
    );
    assert!(budgeted.join("kurtis/best.safetensors").exists());

    // Killed after the stage's first epoch, then resumed: the same weights.
    let killed = root.join("killed");
    let args = with_shared(&killed);
    let mut resume: Vec<&str> = args.iter().map(String::as_str).collect();
    kill_after_first_epoch(&resume, &killed.join("shared/state.json"));
    resume.push("--resume");
    trainer_ok(&resume);
    for slug in ["men-tshirts", "kurtis"] {
        assert!(
            std::fs::read(straight.join(slug).join("best.safetensors")).unwrap()
                == std::fs::read(killed.join(slug).join("best.safetensors")).unwrap(),
            "{slug}: resumed weights differ from the uninterrupted run's"
        );
    }
}

#[test]
fn bad_arguments_and_data_give_clear_errors() {
    let tmp = TempDir::new("bad");
    let root = tmp.0.clone();
    let one_line = |args: &[&str], needle: &str| {
        let out = trainer(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let missing = root.join("nothing");
    let run = root.join("run");
    one_line(
        &[
            "train",
            "--data",
            s(&missing),
            "--out",
            s(&run),
            "--device",
            "cpu",
        ],
        "nothing",
    );
    one_line(&["train", "--out", s(&run)], "--data");
    let data = root.join("data");
    synth(&data, "8", "32");
    one_line(
        &[
            "train",
            "--data",
            s(&data),
            "--out",
            s(&run),
            "--backbone",
            "huge",
            "--device",
            "cpu",
        ],
        "huge",
    );
    one_line(
        &[
            "train",
            "--data",
            s(&data),
            "--out",
            s(&run),
            "--categories",
            "Jeans",
            "--device",
            "cpu",
            "--image-size",
            "32",
        ],
        "Jeans",
    );
    one_line(&["evaluate", "--run", s(&missing)], "not a training run");
    one_line(&["predict", "--run", s(&missing)], "--category");
    one_line(&["bench", "--backbone", "huge", "--device", "cpu"], "huge");
    one_line(
        &["bench", "--category", "Socks", "--device", "cpu"],
        "--category",
    );
    one_line(
        &["bench", "--train", "--batch-parts", "0", "--device", "cpu"],
        "--batch-parts",
    );
}
