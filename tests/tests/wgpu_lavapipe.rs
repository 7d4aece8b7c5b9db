//! The native wgpu backend, run on the CPU through Mesa's lavapipe (Vulkan): a tiny
//! training run on `--device wgpu`, then the same model's predictions on wgpu and on
//! the CPU backend must agree.
//!
//! Needs a Vulkan driver (`apt-get install mesa-vulkan-drivers`, which `.ci/run`
//! installs). Outside CI, a machine without one skips with a message; in CI (`CI` set)
//! the test fails instead, so that it cannot silently stop running.
//!
//! It was `#[ignore]`d while the trainer built Burn with kernel autotuning: every new
//! matrix-product shape compiled its whole candidate set, and this run did not finish
//! its first epoch within five minutes. Without autotuning (the trainer's default since
//! the sixth session, BENCHMARKS.md "CUDA") it takes about 26 s on the 2-core
//! development machine once the trainer is built.

use std::path::Path;
use tests::*;

fn lavapipe_present() -> bool {
    Path::new("/usr/share/vulkan/icd.d")
        .read_dir()
        .is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("lvp_icd")))
        })
}

fn probabilities(v: &serde_json::Value) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for p in v["predictions"].as_array().unwrap() {
        for a in p["attributes"].as_array().unwrap() {
            for (class, prob) in a["probs"].as_object().unwrap() {
                out.push((
                    a["name"].as_str().unwrap().to_string(),
                    class.clone(),
                    prob.as_f64().unwrap(),
                ));
            }
        }
    }
    out
}

#[test]
fn wgpu_on_lavapipe_trains_and_agrees_with_the_cpu() {
    if !lavapipe_present() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have lavapipe (mesa-vulkan-drivers)"
        );
        eprintln!("skipped: no lavapipe Vulkan driver (apt-get install mesa-vulkan-drivers)");
        return;
    }
    let tmp = TempDir::new("wgpu");
    let data = tmp.0.join("data");
    let run = tmp.0.join("run");
    trainer_ok(&[
        "synth",
        "--out",
        s(&data),
        "--train-per-category",
        "24",
        "--test-per-category",
        "4",
        "--size",
        "32",
        "--seed",
        "9",
    ]);
    let out = trainer_ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--backbone",
        "default-small",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--head-dim",
        "32",
        "--phase1-epochs",
        "1",
        "--phase2-epochs",
        "1",
        "--categories",
        "Men Tshirts",
        "--device",
        "wgpu",
        "--quiet",
    ]);
    let log = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "one line per epoch:\n{log}");
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            v["device"].as_str().unwrap().split(' ').next(),
            Some("wgpu"),
            "{line}"
        );
        assert!(v["loss"].as_f64().unwrap().is_finite());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wgpu"),
        "the chosen device is printed:\n{stdout}"
    );

    let images: Vec<String> = (0..2)
        .map(|i| s(&data.join(format!("test_images/{i:06}.jpg"))).to_string())
        .collect();
    let predict = |device: &str| {
        let mut args = vec!["predict", "--run", s(&run), "--category", "Men Tshirts"];
        args.extend(images.iter().map(String::as_str));
        args.extend(["--json", "--device", device]);
        probabilities(&json(&trainer_ok(&args)))
    };
    let (gpu, cpu) = (predict("wgpu"), predict("cpu"));
    assert_eq!(gpu.len(), cpu.len());
    assert!(!gpu.is_empty());
    for ((a, c, p), (a2, c2, q)) in gpu.iter().zip(&cpu) {
        assert_eq!((a, c), (a2, c2));
        assert!((p - q).abs() < 1e-3, "{a}={c}: wgpu {p} vs cpu {q}");
    }
}

/// Choosing a device on a machine without a display must not print libwayland's
/// "XDG_RUNTIME_DIR is invalid" error (from Mesa's device-select layer, which lavapipe
/// installs): users read it as a failure.
#[test]
fn device_probe_is_quiet_without_a_display() {
    let layer = Path::new("/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json");
    if !lavapipe_present() || !layer.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have lavapipe and its device-select layer (mesa-vulkan-drivers)"
        );
        eprintln!("skipped: no lavapipe or no Mesa device-select layer");
        return;
    }
    let out = std::process::Command::new(trainer_bin())
        .args(["bench", "--backbone", "atto", "--image-size", "32"])
        .args(["--batch-size", "1", "--seconds", "0.2", "--device", "auto"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .output()
        .expect("run trainer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trainer bench failed:\n{stderr}");
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR"),
        "the device probe printed display noise:\n{stderr}"
    );
}
