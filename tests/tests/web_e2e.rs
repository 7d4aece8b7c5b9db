//! The web page, end to end, in a real browser.
//!
//! Builds the site with trunk, serves it with a small export on 127.0.0.1, starts
//! Debian's headless Chromium (WebGPU through SwiftShader) under chromedriver and
//! drives it over WebDriver. First the automatic backend choice: WebGPU on a hardware
//! adapter, else the CPU with a notice (SwiftShader is a software fallback). Then:
//! 1. WebGPU, chosen with the page's control, runs and the page names the adapter;
//! 2. photos given to the file input get the labels that native prediction gives for
//!    the same photo and model, every probability within [`PROB_TOLERANCE`];
//! 3. the CPU backend (the page's control, then `?backend=cpu`) gives the same;
//! 4. a text file given as a photo shows an error, and the next photo is still tagged;
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
use tests::{synthetic_photo, PredictOutput};

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
const BENCH_PHOTOS: usize = 6;

/// Makes the export the page loads and the native predictions it must match.
///
/// This is the one place that knows who makes them: today `make_test_export`, which
/// mirrors the command lines of `trainer export-web` and `trainer predict --json`;
/// once the trainer has them, call the trainer here instead.
fn export_and_predict(dir: &Path, category: &str, images: &[PathBuf]) -> Result<PredictOutput> {
    let tool = env!("CARGO_BIN_EXE_make_test_export");
    run(Command::new(tool)
        .args(["export-web", "--out"])
        .arg(dir)
        .args(["--precision", "f32"]))?;
    let out = run(Command::new(tool)
        .args(["predict", "--export"])
        .arg(dir)
        .args(["--category", category, "--json"])
        .args(images))?;
    serde_json::from_slice(&out).context("parsing the predictions")
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

    // Photos, a text file posing as one, and the native answers.
    let mut photos = Vec::new();
    for (i, (w, h)) in [(96, 72), (80, 120)].into_iter().enumerate() {
        let path = work.join(format!("photo-{}.png", i + 1));
        std::fs::write(&path, synthetic_photo(w, h, i as u32 + 1))?;
        photos.push(path);
    }
    let bench: Vec<PathBuf> = (1..=BENCH_PHOTOS)
        .map(|i| {
            let path = work.join(format!("bench-{i}.png"));
            std::fs::copy(&photos[0], &path).map(|_| path)
        })
        .collect::<Result<_, _>>()?;
    let text = work.join("notes.txt");
    std::fs::write(&text, "this is not a photo\n")?;
    let models = work.join("models");
    let expected = export_and_predict(&models, CATEGORY, &photos)?;
    check_margins(&expected)?;

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

    // 2. Photos on WebGPU match native predictions.
    browser.add_files(&photos)?;
    browser.wait_tagged(photos.len())?;
    compare(&browser.results()?[..photos.len()], &expected, "WebGPU")?;

    // 4. A text file: an error message, then the page still works.
    browser.add_files(std::slice::from_ref(&text))?;
    let errors = browser.wait_errors(1)?;
    if !errors
        .iter()
        .any(|e| e.contains("notes.txt") && e.contains("not a readable image"))
    {
        bail!("no clear error for a text file: {errors:?}");
    }
    browser.add_files(&photos[..1])?;
    browser.wait_tagged(photos.len() + 1)?;
    let after = browser.results()?;
    compare(&after[photos.len()..], &expected, "WebGPU after an error")?;

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

    // 5. A second load takes the weights from the cache; `?backend=cpu` forces the CPU.
    browser.go(&format!("{url}?backend=cpu"))?;
    let state = browser.wait_ready()?;
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
    let cpu_ms = browser.bench(&bench)?;
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
/// (`WEB_BENCH_BACKBONE`, `WEB_BENCH_SIZE`, `WEB_BENCH_HEAD_DIM`, `WEB_BENCH_PRECISION`
/// change them; `WEB_BENCH_BACKENDS` and `WEB_BENCH_PHOTOS` say what is timed), on
/// WebGPU and on the CPU, checking the results against native
/// predictions from the same export. Prints the page's median time per photo, the
/// native binary's, and the export's size in f16 and f32.
///
/// `cargo test --release -p tests --test web_e2e -- --ignored --nocapture page_benchmark`
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
    let (backbone, size) = (
        var("WEB_BENCH_BACKBONE", "atto"),
        var("WEB_BENCH_SIZE", "224"),
    );
    let head_dim = var("WEB_BENCH_HEAD_DIM", "128");
    let precision = var("WEB_BENCH_PRECISION", "f16");
    let backends = var("WEB_BENCH_BACKENDS", "webgpu,cpu");
    let count: usize = var("WEB_BENCH_PHOTOS", &BENCH_PHOTOS.to_string()).parse()?;
    let native_repeat = count.max(5);
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

    let tool = env!("CARGO_BIN_EXE_make_test_export");
    let mut sizes = Vec::new();
    for p in ["f16", "f32"] {
        let dir = work.join(format!("models-{p}"));
        run(Command::new(tool)
            .args(["export-web", "--category", CATEGORY, "--out"])
            .arg(&dir)
            .args(["--precision", p, "--backbone", &backbone, "--size", &size])
            .args(["--head-dim", &head_dim]))?;
        let bytes: u64 = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        sizes.push(format!("{p} {:.2} MB", bytes as f64 / 1e6));
    }
    let models = work.join(format!("models-{precision}"));
    let expected: PredictOutput = serde_json::from_slice(&run(Command::new(tool)
        .args(["predict", "--export"])
        .arg(&models)
        .args(["--category", CATEGORY, "--json"])
        .args(&photos))?)?;
    let native: Value = serde_json::from_slice(&run(Command::new(tool)
        .args(["bench", "--export"])
        .arg(&models)
        .args([
            "--category",
            CATEGORY,
            "--repeat",
            &native_repeat.to_string(),
        ])
        .arg(&photo))?)?;

    let server = Server::start(dist, models)?;
    let browser = Browser::start(tools, &work, "chromium", true)?;
    let url = format!("http://127.0.0.1:{}/", server.port);
    let mut lines = Vec::new();
    for backend in backends.split(',') {
        browser.go(&format!("{url}?backend={backend}"))?;
        let state = browser.wait_ready()?;
        ensure_eq(&state["backend"], backend, "backend")?;
        let ms = browser.bench(&photos)?;
        compare(&browser.results()?, &expected, backend)?;
        lines.push(format!("{backend} ({}) {ms:.1} ms", state["adapter"]));
    }
    eprintln!(
        "BENCH {CATEGORY}, {backbone} backbone, heads {head_dim}, {size} px, {precision} weights: \
         page {}; native {:.1} ms (median of {native_repeat}, this build's profile); export {}",
        lines.join(", "),
        native["median_ms"].as_f64().unwrap_or(f64::NAN),
        sizes.join(", ")
    );
    Ok(())
}

/// Where the test works: `target/web-e2e` of the build that runs it.
fn work_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_make_test_export"));
    // target/<profile>/make_test_export -> target/web-e2e
    exe.parent()
        .and_then(Path::parent)
        .map(|target| target.join("web-e2e"))
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

/// The labels can only be compared exactly when no two classes are near a tie; a
/// fixture that breaks this must be changed (another seed), not the tolerance.
fn check_margins(expected: &PredictOutput) -> Result<()> {
    for p in &expected.predictions {
        for a in &p.attributes {
            let mut probs: Vec<f32> = a.probs.values().copied().collect();
            probs.sort_by(|x, y| y.total_cmp(x));
            if probs.len() > 1 && probs[0] - probs[1] < 4.0 * PROB_TOLERANCE {
                bail!(
                    "fixture too close to a tie: {} {}: {:?}",
                    p.image,
                    a.name,
                    &probs[..2]
                );
            }
        }
    }
    Ok(())
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
            if g["label"].as_str() != Some(w.label.as_str()) {
                bail!(
                    "{what} {image} {}: page says {}, native says {:?}",
                    w.name,
                    g["label"],
                    w.label
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
