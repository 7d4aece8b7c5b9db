//! The web page, end to end, in a real browser.
//!
//! Builds the site with trunk, serves it with a tiny trained export on 127.0.0.1, starts
//! Debian's headless Chromium (WebGPU through SwiftShader) under chromedriver and
//! drives it over WebDriver. First the automatic backend choice: WebGPU on a hardware
//! adapter, else the CPU with a notice (SwiftShader is a software fallback). Then:
//! 1. WebGPU, chosen with the page's control, runs and the page names the adapter;
//! 2. photos dropped on the page get the labels that `trainer predict --json` gives for
//!    the same photo and model (a tiny run trained by `trainer train`, exported by
//!    `trainer export-web`), every probability within [`PROB_TOLERANCE`];
//! 3. the CPU backend (the page's control and the file picker, then `?backend=cpu`)
//!    gives the same;
//! 4. a text file dropped as a photo shows an error, and the next photo (pasted) is
//!    still tagged; a huge photo gets a clear message too;
//! 5. a second page load takes the weights from Cache Storage (the page says so, and
//!    the server sees the weight file requested once);
//!
//! and the page requests nothing outside its origin; in a browser without WebGPU,
//! `auto` runs on the CPU with a notice and `?backend=webgpu` is a clear error. It
//! saves a screenshot of the results and prints the page's time per photo on each
//! backend.
//!
//! Needs trunk 0.21.14, wasm-bindgen-cli at the version in Cargo.lock, chromium and
//! chromedriver (`.ci/run` installs them). Without them the test is skipped with a
//! message, except in CI (`CI=true`), where it fails.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{s, synthetic_photo, trainer_bin, PredictOutput};

/// Largest difference allowed between a probability in the page and natively.
const PROB_TOLERANCE: f32 = 1e-3;
/// The category the test tags with (the export holds two).
const CATEGORY: &str = "Men Tshirts";
/// How long the page may take to load a model or tag the photos it was given
/// (`WEB_E2E_TIMEOUT_S` overrides it, for benchmarks of big models).
fn page_timeout() -> Duration {
    let seconds = std::env::var("WEB_E2E_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(seconds)
}
/// Photos tagged per backend to time the page (the first, which compiles shaders, is
/// left out of the median).
const BENCH_PHOTOS: usize = 4;

/// A small run trained by the real trainer, the way a user makes one: `trainer synth`,
/// then `trainer train` (ConvNeXt-atto, `size` pixels, heads `head_dim` wide, `epochs`
/// epochs per phase, two categories so that the page's chooser has a choice), on the CPU.
/// Returns the run folder and the synthetic data set.
fn train_run(
    work: &Path,
    size: &str,
    head_dim: &str,
    epochs: &str,
    per_category: &str,
) -> Result<(PathBuf, PathBuf)> {
    let data = work.join("data");
    let run_dir = work.join("run");
    trainer(&[
        "synth",
        "--out",
        s(&data),
        "--train-per-category",
        per_category,
        "--test-per-category",
        "4",
        "--size",
        size,
        "--seed",
        "3",
    ])?;
    trainer(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run_dir),
        "--backbone",
        "atto",
        "--image-size",
        size,
        "--batch-size",
        "8",
        "--head-dim",
        head_dim,
        "--phase1-epochs",
        epochs,
        "--phase2-epochs",
        epochs,
        "--categories",
        &format!("{CATEGORY},Kurtis"),
        "--device",
        "cpu",
        "--quiet",
        "--seed",
        "5",
    ])?;
    Ok((run_dir, data))
}

/// `trainer export-web --run RUN --out OUT --precision P`.
fn export_web(run_dir: &Path, out: &Path, precision: &str) -> Result<()> {
    trainer(&[
        "export-web",
        "--run",
        s(run_dir),
        "--out",
        s(out),
        "--precision",
        precision,
    ])?;
    Ok(())
}

/// `trainer predict --run RUN --category C IMAGE... --json` on the CPU: what the page
/// must match.
fn predict(run_dir: &Path, category: &str, images: &[PathBuf]) -> Result<PredictOutput> {
    let mut args = vec!["predict", "--run", s(run_dir), "--category", category];
    args.extend(images.iter().map(|i| s(i)));
    args.extend(["--json", "--device", "cpu"]);
    let out = trainer(&args)?;
    serde_json::from_slice(&out).context("parsing trainer predict --json")
}

/// Runs the trainer binary, failing with its stderr.
fn trainer(args: &[&str]) -> Result<Vec<u8>> {
    run(Command::new(trainer_bin()).args(args))
}

#[test]
fn page_tags_photos_on_webgpu_and_cpu_like_native() {
    let Some(tools) = Tools::find() else { return };
    if let Err(e) = end_to_end(&tools) {
        panic!("{e:?}");
    }
}

fn end_to_end(tools: &Tools) -> Result<()> {
    let work = work_dir();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let started = Instant::now();
    let dist = build_site(tools, &work)?;
    eprintln!("site built in {:.0?}", started.elapsed());

    // A tiny trained run, exported for the page in f32 (so the page runs the very
    // weights `trainer predict` runs).
    let started_training = Instant::now();
    let (run_dir, data) = train_run(&work, "128", "32", "1", "24")?;
    let models = work.join("models");
    export_web(&run_dir, &models, "f32")?;
    eprintln!("trained and exported in {:.0?}", started_training.elapsed());

    // Photos: one of the synthetic test set's (square JPEG) and two drawn here (PNG,
    // not square, so the page's resize is exercised); a text file posing as a photo.
    let mut photos = vec![work.join("photo-1.jpg")];
    std::fs::copy(data.join("test_images/000000.jpg"), &photos[0])?;
    for (i, (w, h)) in [(96, 72), (80, 120)].into_iter().enumerate() {
        let path = work.join(format!("photo-{}.png", i + 2));
        std::fs::write(&path, synthetic_photo(w, h, i as u32 + 1))?;
        photos.push(path);
    }
    let bench: Vec<PathBuf> = (1..=BENCH_PHOTOS)
        .map(|i| {
            let path = work.join(format!("bench-{i}.png"));
            std::fs::copy(&photos[1], &path).map(|_| path)
        })
        .collect::<Result<_, _>>()?;
    let text = work.join("notes.txt");
    std::fs::write(&text, "this is not a photo\n")?;
    let mut all = photos.clone();
    all.extend(bench.iter().cloned());
    let expected = predict(&run_dir, CATEGORY, &all)?;

    let server = Server::start(dist, models.clone())?;
    let browser = Browser::start(tools, &work, "chromium-webgpu", true)?;
    let url = format!("http://127.0.0.1:{}/", server.port);

    // The automatic choice: WebGPU on a hardware adapter; SwiftShader is a software
    // fallback, so here it must pick the CPU and say why.
    browser.go(&format!("{url}?backend=auto"))?;
    let state = browser.wait_ready()?;
    eprintln!("first load (auto): {state}");
    ensure_eq(&state["weightsSource"], "network", "weights on first load")?;
    if state["backend"] == "cpu"
        && !state["messages"]
            .to_string()
            .contains("is a software fallback")
    {
        bail!("auto chose the CPU without saying why: {state}");
    }

    // 1. WebGPU, chosen with the page's control; the weights are now in the cache.
    browser.click("#backend option[value=webgpu]")?;
    let state = browser.wait_state(|s| s["backend"] == "webgpu" && s["state"] == "ready")?;
    eprintln!("WebGPU chosen: {state}");
    let adapter = state["adapter"].as_str().unwrap_or_default().to_string();
    if adapter.is_empty() {
        bail!("the page names no WebGPU adapter: {state}");
    }
    ensure_eq(
        &state["weightsSource"],
        "cache",
        "weights after switching backend",
    )?;

    // 2. Photos dropped on the drop zone, tagged on WebGPU, match native predictions.
    browser.give_files(&photos, "drop")?;
    browser.wait_tagged(photos.len())?;
    compare(&browser.results()?[..photos.len()], &expected, "WebGPU")?;

    // 4. A text file dropped as a photo: an error message, then the page still works
    //    (a pasted photo is tagged).
    browser.give_files(std::slice::from_ref(&text), "drop")?;
    let errors = browser.wait_errors(1)?;
    if !errors
        .iter()
        .any(|e| e.contains("notes.txt") && e.contains("not a readable image"))
    {
        bail!("no clear error for a text file: {errors:?}");
    }
    browser.give_files(&photos[..1], "paste")?;
    browser.wait_tagged(photos.len() + 1)?;
    let after = browser.results()?;
    compare(
        &after[photos.len()..],
        &expected,
        "WebGPU after an error (pasted)",
    )?;

    // A huge photo (a PNG header claiming 20000 x 20000 pixels): a clear message.
    let huge = work.join("huge.png");
    std::fs::write(&huge, png_header_only(20_000, 20_000))?;
    browser.give_files(std::slice::from_ref(&huge), "drop")?;
    let errors = browser.wait_errors(2)?;
    if !errors
        .iter()
        .any(|e| e.contains("huge.png") && e.contains("over the limit"))
    {
        bail!("no clear error for a huge photo: {errors:?}");
    }

    // Time per photo on WebGPU, then the screenshot with a heat map on.
    let gpu_ms = browser.bench(&bench)?;
    browser.click("#history tr:first-child")?;
    browser.click("#heat-toggle")?;
    let screenshot = work.join("results.png");
    std::fs::write(&screenshot, browser.screenshot()?)?;
    eprintln!("screenshot of the results: {}", screenshot.display());

    // 3. The backend control back to the CPU gives the same labels.
    browser.click("#backend option[value=cpu]")?;
    let state = browser.wait_state(|s| s["backend"] == "cpu" && s["state"] == "ready")?;
    eprintln!("after choosing the CPU: {state}");
    let before = browser.tagged()?;
    browser.add_files(&photos)?;
    browser.wait_tagged(before + photos.len())?;
    compare(&browser.results()?[before..], &expected, "CPU (control)")?;

    // 5. A second load takes the weights from the cache; `?backend=cpu` forces the CPU,
    //    `?workers=2` two workers there (the second loads the weights from the cache
    //    too), which tag the photos between them, shown in the order given.
    browser.go(&format!("{url}?backend=cpu&workers=2"))?;
    let state = browser.wait_state(|s| s["state"] == "ready" && s["workers"] == "2")?;
    eprintln!("second load: {state}");
    ensure_eq(&state["backend"], "cpu", "backend with ?backend=cpu")?;
    ensure_eq(
        &state["weightsSource"],
        "cache",
        "weights on the second load",
    )?;
    browser.add_files(&photos)?;
    browser.wait_tagged(photos.len())?;
    compare(&browser.results()?, &expected, "CPU (?backend=cpu)")?;

    // The photos tagged in turn, downloaded as a CSV in the submission format.
    let csv = browser.csv()?;
    let lines: Vec<&str> = csv.lines().collect();
    let header = format!(
        "id,Category,len,{}",
        (1..=10)
            .map(|k| format!("attr_{k}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    ensure_eq(&json!(lines.first()), &header, "the CSV's header")?;
    if lines.len() != photos.len() + 1 {
        bail!("the CSV should hold one row per tagged photo: {csv}");
    }
    let first = &expected.predictions[0];
    let mut want = vec![
        "photo-1".to_string(),
        CATEGORY.into(),
        first.attributes.len().to_string(),
    ];
    want.extend(first.attributes.iter().map(|a| a.label.clone()));
    want.resize(13, "dummy_value".into());
    ensure_eq(
        &json!(lines[1]),
        &want.join(","),
        "the CSV row of photo-1.jpg",
    )?;
    let cpu_ms = browser.bench(&bench)?;
    let helped = browser.state()?["helperTagged"]
        .as_str()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    if helped == 0 {
        bail!("the second worker tagged none of the photos");
    }
    let results = browser.results()?;
    let shown: Vec<&str> = results[photos.len()..]
        .iter()
        .map(|r| r["image"].as_str().unwrap_or_default())
        .collect();
    let given: Vec<&str> = bench
        .iter()
        .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or_default())
        .collect();
    if shown != given {
        bail!("two workers' results out of the order given: {shown:?}, given {given:?}");
    }
    compare(&results[photos.len()..], &expected, "CPU, two workers")?;
    let requests = server.requests();
    let downloads = requests
        .iter()
        .filter(|r| r.ends_with(".safetensors"))
        .count();
    if downloads != 1 {
        bail!("two page loads should download the weights once; the server saw: {requests:?}");
    }

    // Without WebGPU: `auto` says so and runs on the CPU; `webgpu` is a clear error.
    let plain = Browser::start(tools, &work, "chromium-no-webgpu", false)?;
    plain.go(&format!("{url}?backend=auto"))?;
    let state = plain.wait_ready()?;
    eprintln!("without WebGPU: {state}");
    ensure_eq(&state["backend"], "cpu", "backend without WebGPU")?;
    if !state["messages"]
        .to_string()
        .contains("WebGPU is not available")
    {
        bail!("no notice that WebGPU is missing: {state}");
    }
    plain.go(&format!("{url}?backend=webgpu"))?;
    let state = plain.wait_state(|s| s["state"] == "error")?;
    if !state["messages"]
        .to_string()
        .contains("WebGPU is not available")
    {
        bail!("forcing WebGPU without it gives no clear error: {state}");
    }
    drop(plain);

    // Nothing left the origin.
    let foreign = browser.execute(
        "return performance.getEntriesByType('resource').map(e => e.name)\
         .filter(n => !n.startsWith(location.origin) && !n.startsWith('blob:'));",
    )?;
    if foreign.as_array().is_none_or(|a| !a.is_empty()) {
        bail!("the page requested something outside its origin: {foreign}");
    }

    eprintln!(
        "BENCH page time per photo ({CATEGORY}, median of {} after the first): \
         WebGPU ({adapter}) {gpu_ms:.1} ms, CPU {cpu_ms:.1} ms",
        BENCH_PHOTOS - 1
    );
    eprintln!("end-to-end test done in {:.0?}", started.elapsed());
    Ok(())
}

/// Times the page on a model closer to real use than the end-to-end test's:
/// ConvNeXt-atto with width-128 heads at 224 px and f16 weights by default
/// (`WEB_BENCH_SIZE`, `WEB_BENCH_HEAD_DIM`, `WEB_BENCH_PRECISION` change them;
/// `WEB_BENCH_BACKENDS` and `WEB_BENCH_PHOTOS` say what is timed), on WebGPU and on the
/// CPU, the CPU with each number of workers in `WEB_BENCH_WORKERS` (default `1,2`). The run is made by `trainer train` with no epochs (freshly initialised
/// weights: the time does not depend on them). Prints the page's median time per photo,
/// `trainer bench`'s for the same network natively on the CPU, and the export's size in
/// f16 and f32. With f32 weights the page's labels are also checked against
/// `trainer predict`.
///
/// `cargo test -p tests --test web_e2e -- --ignored --nocapture page_benchmark`
#[test]
#[ignore = "a benchmark: run it by name"]
fn page_benchmark() {
    let Some(tools) = Tools::find() else { return };
    if let Err(e) = benchmark(&tools) {
        panic!("{e:?}");
    }
}

fn benchmark(tools: &Tools) -> Result<()> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let size = var("WEB_BENCH_SIZE", "224");
    let head_dim = var("WEB_BENCH_HEAD_DIM", "128");
    let precision = var("WEB_BENCH_PRECISION", "f16");
    let backends = var("WEB_BENCH_BACKENDS", "webgpu,cpu");
    let workers = var("WEB_BENCH_WORKERS", "1,2");
    let count: usize = var("WEB_BENCH_PHOTOS", &BENCH_PHOTOS.to_string()).parse()?;
    let work = work_dir().with_file_name("web-bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let dist = build_site(tools, &work)?;

    let photo = work.join("photo.png");
    std::fs::write(&photo, synthetic_photo(400, 300, 3))?;
    let photos: Vec<PathBuf> = (1..=count)
        .map(|i| {
            let path = work.join(format!("bench-{i}.png"));
            std::fs::copy(&photo, &path).map(|_| path)
        })
        .collect::<Result<_, _>>()?;

    let (run_dir, _) = train_run(&work, &size, &head_dim, "0", "8")?;
    let mut sizes = Vec::new();
    for p in ["f16", "f32"] {
        let dir = work.join(format!("models-{p}"));
        export_web(&run_dir, &dir, p)?;
        let bytes = std::fs::metadata(dir.join("men-tshirts.safetensors"))?.len();
        sizes.push(format!("{p} {:.2} MB", bytes as f64 / 1e6));
    }
    let models = work.join(format!("models-{precision}"));
    let expected = predict(&run_dir, CATEGORY, &photos)?;
    let native: Value = serde_json::from_slice(&trainer(&[
        "bench",
        "--backbone",
        "atto",
        "--image-size",
        &size,
        "--head-dim",
        &head_dim,
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--seconds",
        "10",
        "--json",
    ])?)?;
    let native_ms = 1000.0 / native["img_per_s"].as_f64().unwrap_or(f64::NAN);

    let server = Server::start(dist, models)?;
    let browser = Browser::start(tools, &work, "chromium", true)?;
    let url = format!("http://127.0.0.1:{}/", server.port);
    let mut lines = Vec::new();
    for backend in backends.split(',') {
        // WebGPU runs one worker; the CPU as many as asked, one setting after another.
        let counts = if backend == "cpu" {
            workers.as_str()
        } else {
            "1"
        };
        for count in counts.split(',') {
            browser.go(&format!("{url}?backend={backend}&workers={count}"))?;
            let state = browser.wait_state(|s| s["state"] == "ready" && s["workers"] == count)?;
            ensure_eq(&state["backend"], backend, "backend")?;
            let (ms, rate) = browser.bench_rate(&photos)?;
            if precision == "f32" {
                compare(&browser.results()?, &expected, backend)?;
            }
            lines.push(format!(
                "{backend} ({}), {count} worker(s): {ms:.1} ms per photo, {rate:.2} photos/s",
                state["adapter"]
            ));
        }
    }
    // A screenshot at a real input size, where the heat map has cells to show.
    browser.click("#history tr:first-child")?;
    browser.click("#heat-toggle")?;
    let screenshot = work.join("results.png");
    std::fs::write(&screenshot, browser.screenshot()?)?;
    eprintln!("screenshot of the results: {}", screenshot.display());
    eprintln!(
        "BENCH {CATEGORY}, atto backbone, heads {head_dim}, {size} px, {precision} weights: \
         page {}; native (trainer bench, batch 1, CPU) {native_ms:.1} ms; \
         men-tshirts.safetensors {}",
        lines.join(", "),
        sizes.join(", ")
    );
    Ok(())
}

/// Where the test works: `target/web-e2e` of the build that runs it.
fn work_dir() -> PathBuf {
    // target/<profile>/deps/web_e2e-<hash> -> target/web-e2e
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("web-e2e")))
        .unwrap_or_else(|| std::env::temp_dir().join("web-e2e"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

fn ensure_eq(value: &Value, want: &str, what: &str) -> Result<()> {
    if value.as_str() != Some(want) {
        bail!("{what}: expected {want:?}, the page says {value}");
    }
    Ok(())
}

/// A PNG that is only a header (IHDR for `width` x `height`, 8-bit RGB), the first bytes
/// of its image data and an end:
/// what a photo too large to decode looks like before decoding.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), compression, filter, interlace
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // The start of a zlib stream: decoders read the size when the image data begins.
    chunk(&mut png, b"IDAT", &[0x78, 0x9c]);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Every page result matches the native prediction for the same photo.
fn compare(results: &[Value], expected: &PredictOutput, what: &str) -> Result<()> {
    if results.is_empty() {
        bail!("{what}: no results on the page");
    }
    let mut worst = 0f32;
    for result in results {
        let image = result["image"].as_str().unwrap_or_default();
        let want = expected
            .predictions
            .iter()
            .find(|p| file_name(&p.image) == image)
            .with_context(|| format!("{what}: no native prediction for {image}"))?;
        ensure_eq(&result["category"], &want.category, "category")?;
        let got = result["attributes"]
            .as_array()
            .with_context(|| format!("{what}: no attributes in {result}"))?;
        if got.len() != want.attributes.len() {
            bail!(
                "{what} {image}: {} attributes, natively {}",
                got.len(),
                want.attributes.len()
            );
        }
        for (g, w) in got.iter().zip(&want.attributes) {
            ensure_eq(&g["name"], &w.name, "attribute order")?;
            // The labels must be equal, unless native's best two classes are within the
            // tolerance of each other (a tie that rounding may break either way).
            let page_label = g["label"].as_str().unwrap_or_default();
            if page_label != w.label {
                let tie = w
                    .probs
                    .get(page_label)
                    .is_some_and(|p| w.prob - p <= PROB_TOLERANCE);
                if !tie {
                    bail!(
                        "{what} {image} {}: page says {page_label:?}, native says {:?}",
                        w.name,
                        w.label
                    );
                }
                eprintln!(
                    "{what} {image} {}: a tie within {PROB_TOLERANCE} ({page_label:?} / {:?})",
                    w.name, w.label
                );
            }
            for (class, p) in &w.probs {
                let page = g["probs"][class].as_f64().with_context(|| {
                    format!("{what} {image} {}: no probability for {class}", w.name)
                })? as f32;
                let diff = (page - p).abs();
                worst = worst.max(diff);
                if diff > PROB_TOLERANCE {
                    bail!("{what} {image} {} {class}: page {page}, native {p} (tolerance {PROB_TOLERANCE})", w.name);
                }
            }
        }
    }
    eprintln!(
        "{what}: {} photos match native predictions (largest probability difference {worst:.2e})",
        results.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Tools and the site build

struct Tools {
    trunk: PathBuf,
    /// Directory holding wasm-bindgen of the Cargo.lock version (put first on PATH).
    bindgen_dir: PathBuf,
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Tools {
    /// Finds the tools, or explains what is missing: a skip outside CI, a failure in CI.
    fn find() -> Option<Self> {
        match Self::locate() {
            Ok(tools) => Some(tools),
            Err(missing) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                let message = format!(
                    "web end-to-end test cannot run: {missing:#}. `bash .ci/run` installs \
                     trunk, wasm-bindgen-cli, chromium and chromedriver"
                );
                if ci {
                    panic!("{message}");
                }
                eprintln!("\n!!!!!!!! SKIPPED !!!!!!!!\n{message}\n!!!!!!!!!!!!!!!!!!!!!!!!!\n");
                None
            }
        }
    }

    fn locate() -> Result<Self> {
        let tools_bin = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/garment-tagger/tools/bin"));
        let find = |name: &str| -> Option<PathBuf> {
            let mut dirs: Vec<PathBuf> = tools_bin.iter().cloned().collect();
            if let Some(path) = std::env::var_os("PATH") {
                dirs.extend(std::env::split_paths(&path));
            }
            dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
        };
        let trunk = find("trunk").context("trunk is not installed")?;
        let wanted = bindgen_version()?;
        let bindgen = find("wasm-bindgen").context("wasm-bindgen-cli is not installed")?;
        let found = run(Command::new(&bindgen).arg("--version"))?;
        let found = String::from_utf8_lossy(&found);
        if !found.contains(&wanted) {
            bail!(
                "{} is {}, Cargo.lock needs {wanted} (trunk would download it)",
                bindgen.display(),
                found.trim()
            );
        }
        let chromium = ["chromium", "chromium-browser"]
            .iter()
            .find_map(|n| find(n))
            .context("chromium is not installed")?;
        let chromedriver = find("chromedriver").context("chromedriver is not installed")?;
        Ok(Self {
            trunk,
            bindgen_dir: bindgen.parent().map(Path::to_path_buf).unwrap_or_default(),
            chromium,
            chromedriver,
        })
    }
}

/// The wasm-bindgen version pinned in Cargo.lock.
fn bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen")
}

/// `trunk build --release` into the work directory (cargo's own cache keeps a repeat
/// build quick).
fn build_site(tools: &Tools, work: &Path) -> Result<PathBuf> {
    let dist = work.join("dist");
    let mut path = vec![tools.bindgen_dir.clone()];
    if let Some(p) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&p));
    }
    run(Command::new(&tools.trunk)
        .current_dir(workspace_root())
        .env("PATH", std::env::join_paths(path)?)
        .env("NO_COLOR", "true")
        .args(["build", "--release", "--dist"])
        .arg(&dist))?;
    for file in [
        "index.html",
        "app.js",
        "app_bg.wasm",
        "worker.js",
        "worker_bg.wasm",
        "boot.js",
    ] {
        if !dist.join(file).is_file() {
            bail!("trunk build wrote no {file} in {}", dist.display());
        }
    }
    Ok(dist)
}

// ---------------------------------------------------------------------------------
// A static file server: the site, and the export under /models/

struct Server {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(site: PathBuf, models: PathBuf) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (site, models, log) = (site.clone(), models.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &site, &models, &log);
                });
            }
        });
        Ok(Self { port, log })
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Answers the requests of one connection (keep-alive), GET and HEAD only.
fn serve(stream: TcpStream, site: &Path, models: &Path, log: &Mutex<Vec<String>>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(length) = headers
            .get("content-length")
            .and_then(|l| l.parse::<u64>().ok())
        {
            std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
        if let Ok(mut log) = log.lock() {
            log.push(path.clone());
        }
        let file = if path.contains("..") {
            None
        } else if let Some(rest) = path.strip_prefix("/models/") {
            Some(models.join(rest))
        } else if path == "/" {
            Some(site.join("index.html"))
        } else {
            Some(site.join(path.trim_start_matches('/')))
        };
        let body = file.as_ref().and_then(|f| std::fs::read(f).ok());
        let (status, mime, body) = match (&body, &file) {
            (Some(body), Some(f)) => ("200 OK", mime_type(f), body.as_slice()),
            _ => ("404 Not Found", "text/plain", &b"not found"[..]),
        };
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        )?;
        if method != "HEAD" {
            stream.write_all(body)?;
        }
        stream.flush()?;
    }
}

fn mime_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

// ---------------------------------------------------------------------------------
// Headless Chromium under chromedriver, driven over WebDriver (plain HTTP)

/// W3C WebDriver's key for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (its own profile under
    /// `work/<name>`), with WebGPU (SwiftShader) when `webgpu` is set.
    fn start(tools: &Tools, work: &Path, name: &str, webgpu: bool) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(work.join(format!("{name}-chromedriver.log")))?;
        let driver = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chromedriver")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{}/status", browser.base))
            .call()
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("chromedriver did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = work.join(name);
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1280,1500".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if webgpu {
            args.push("--enable-unsafe-webgpu".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser.command("POST", "/session", Some(caps))?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(browser)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let request = ureq::request(method, &url).timeout(Duration::from_secs(120));
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let text = match response {
            Ok(r) => r.into_string()?,
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "WebDriver {method} {path}: HTTP {code}: {}",
                    r.into_string()?
                )
            }
            Err(e) => bail!("WebDriver {method} {path}: {e}"),
        };
        let value: Value = serde_json::from_str(&text)?;
        Ok(value["value"].clone())
    }

    fn go(&self, url: &str) -> Result<()> {
        self.command("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    fn execute(&self, script: &str) -> Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn find(&self, css: &str) -> Result<String> {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        found[ELEMENT_KEY]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no element {css}"))
    }

    fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css)?;
        self.command("POST", &format!("/element/{id}/click"), Some(json!({})))?;
        Ok(())
    }

    /// Gives files to the page's file input, as a visitor choosing them would.
    fn add_files(&self, files: &[PathBuf]) -> Result<()> {
        let id = self.find("#file")?;
        let text: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text.join("\n") })),
        )?;
        Ok(())
    }

    /// Drops files on the page's drop zone (`how` = "drop"), or pastes them
    /// (`how` = "paste"), as the browser does for a visitor: a `DataTransfer` holding
    /// the files' bytes in a `drop` event on the zone or a `paste` event on the page.
    fn give_files(&self, files: &[PathBuf], how: &str) -> Result<()> {
        use base64::Engine;
        let mut list = Vec::new();
        for file in files {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("photo");
            let mime = match file.extension().and_then(|e| e.to_str()) {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("txt") => "text/plain",
                _ => "",
            };
            list.push(json!([
                name,
                mime,
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ]));
        }
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "const [files, how] = arguments; const dt = new DataTransfer();\
                   for (const [name, type, data] of files) {\
                     const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));\
                     dt.items.add(new File([bytes], name, {type}));\
                   }\
                   const init = {bubbles: true, cancelable: true};\
                   if (how === 'paste') {\
                     document.dispatchEvent(new ClipboardEvent('paste', {...init, clipboardData: dt}));\
                   } else {\
                     const zone = document.getElementById('drop');\
                     zone.dispatchEvent(new DragEvent('dragover', {...init, dataTransfer: dt}));\
                     zone.dispatchEvent(new DragEvent('drop', {...init, dataTransfer: dt}));\
                   }",
                "args": [list, how],
            })),
        )?;
        Ok(())
    }

    /// Clicks "Download CSV" and returns the CSV text the page made (caught as the
    /// blob the page hands to `URL.createObjectURL`).
    fn csv(&self) -> Result<String> {
        self.execute(
            "window.csvBlobs = []; const make = URL.createObjectURL;\
             URL.createObjectURL = b => { window.csvBlobs.push(b); return make.call(URL, b); };\
             return true;",
        )?;
        self.click("#csv")?;
        let text = self.command(
            "POST",
            "/execute/async",
            Some(json!({
                "script": "const done = arguments[arguments.length - 1];\
                   const blob = window.csvBlobs.pop();\
                   if (blob) { blob.text().then(done); } else { done(null); }",
                "args": [],
            })),
        )?;
        text.as_str()
            .map(str::to_string)
            .context("the page made no CSV")
    }

    fn screenshot(&self) -> Result<Vec<u8>> {
        use base64::Engine;
        let data = self.command("GET", "/screenshot", None)?;
        let text = data.as_str().context("no screenshot data")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    }

    /// The page's state, from the `data-*` attributes of `<body>` and its messages.
    fn state(&self) -> Result<Value> {
        self.execute(
            "const d = document.body.dataset; return Object.assign({}, d, {\
               status: document.getElementById('status').textContent,\
               messages: [...document.querySelectorAll('#messages li')].map(li => li.className + ': ' + li.textContent)});",
        )
    }

    fn wait_state(&self, done: impl Fn(&Value) -> bool) -> Result<Value> {
        let timeout = page_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state()?;
            if done(&state) {
                return Ok(state);
            }
            if state["state"] == "error" {
                bail!(
                    "the page reports an error: {state}\nconsole: {}",
                    self.console()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?}; the page says {state}\nconsole: {}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser console's messages so far (for failure reports).
    fn console(&self) -> String {
        match self.command("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| format!("\n  [{}] {}", e["level"], e["message"]))
                .collect(),
            Ok(other) => other.to_string(),
            Err(e) => format!("(no console log: {e})"),
        }
    }

    fn wait_ready(&self) -> Result<Value> {
        self.wait_state(|s| s["state"] == "ready")
    }

    fn tagged(&self) -> Result<usize> {
        Ok(self.state()?["tagged"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    fn wait_tagged(&self, count: usize) -> Result<Value> {
        self.wait_state(|s| {
            s["tagged"].as_str().and_then(|t| t.parse::<usize>().ok()) >= Some(count)
                && s["state"] == "ready"
        })
    }

    /// Waits for `count` error messages and returns them.
    fn wait_errors(&self, count: usize) -> Result<Vec<String>> {
        let state = self.wait_state(|s| {
            s["errors"].as_str().and_then(|t| t.parse::<usize>().ok()) >= Some(count)
                && s["state"] == "ready"
        })?;
        Ok(state["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every result in the history, in order (the predictions' JSON).
    fn results(&self) -> Result<Vec<Value>> {
        let rows = self.execute(
            "return [...document.querySelectorAll('#history tr[data-json]')].map(r => r.dataset.json);",
        )?;
        rows.as_array()
            .ok_or_else(|| anyhow!("no history"))?
            .iter()
            .map(|r| serde_json::from_str(r.as_str().unwrap_or("null")).map_err(Into::into))
            .collect()
    }

    /// Tags the photos; returns the median time per photo (the first left out) and the
    /// photos per second over the whole batch, by the page's clock (`data-busy-ms`).
    fn bench_rate(&self, photos: &[PathBuf]) -> Result<(f64, f64)> {
        let busy = |state: &Value| {
            state["busyMs"]
                .as_str()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let before = busy(&self.state()?);
        let median = self.bench(photos)?;
        let spent = busy(&self.state()?) - before;
        if spent <= 0.0 {
            bail!("the page reports no busy time for {} photos", photos.len());
        }
        Ok((median, photos.len() as f64 * 1000.0 / spent))
    }

    /// Tags the photos and returns the median time per photo, the first left out.
    fn bench(&self, photos: &[PathBuf]) -> Result<f64> {
        let before = self.tagged()?;
        self.add_files(photos)?;
        self.wait_tagged(before + photos.len())?;
        let times = self.execute(
            "return [...document.querySelectorAll('#history tr[data-millis]')].map(r => Number(r.dataset.millis));",
        )?;
        let mut times: Vec<f64> = times
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut times = times.split_off(before + 1);
        if times.is_empty() {
            bail!("no timings");
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
