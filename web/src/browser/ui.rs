//! The page: controls, drop zone, results, heat map and CSV download. All the work
//! happens in the worker; this side reads files, sends each to a free worker and shows
//! what comes back, in the order the photos were given.
//!
//! On the CPU the page runs more than one worker: a worker is one thread, and a batch
//! of photos spread over the cores is tagged that many times faster. The first worker
//! (the one that reads the manifest and reports downloads) is joined by helpers once it
//! is ready on the CPU: one worker per core (`navigator.hardwareConcurrency`, at most
//! [`DEFAULT_WORKERS`]), or as many as `?workers=N` asks (at most [`MAX_WORKERS`]), in
//! either case fewer for large models (see [`WORKER_MEMORY_BUDGET`]). Helpers load the weights from the browser's cache. On WebGPU one
//! worker drives the one GPU.
//!
//! The page's state is mirrored in `data-*` attributes of `<body>` (`data-state`,
//! `data-backend`, `data-adapter`, `data-weights-source`, `data-tagged`,
//! `data-errors`, `data-workers`: the workers ready to tag, `data-helper-tagged`: the
//! photos the helpers tagged, `data-busy-ms`: the time spent with photos to tag), and
//! each result carries its predictions as JSON in `data-json`, so that tests (and
//! curious visitors) can read them without scraping text.

use super::{describe_js, pack, unpack};
use crate::order::release_in_order;
use crate::protocol::{BackendChoice, BackendKind, FromWorker, TagResult, ToWorker};
use crate::submission::{id_from_file_name, to_csv, Row};
use crate::{WebError, MAX_FILE_BYTES};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, BlobPropertyBag, CanvasRenderingContext2d, Document, Element, Event, File, FileList,
    HtmlAnchorElement, HtmlButtonElement, HtmlCanvasElement, HtmlElement, HtmlInputElement,
    HtmlOptionElement, HtmlProgressElement, HtmlSelectElement, ImageData, MessageEvent, Url,
    Worker,
};

/// Classes shown beside each attribute's label.
const RUNNERS_UP: usize = 3;
/// Heat-map colour from the least to the most attention: red stays full while green
/// falls (yellow to red) and opacity rises.
const HEAT_GREEN: (f32, f32) = (214.0, 24.0);
const HEAT_ALPHA: (f32, f32) = (30.0, 170.0);
/// Where the page looks for the export unless `?models=` says otherwise.
const DEFAULT_MODELS: &str = "models/";
/// The most workers the page runs on the CPU.
const MAX_WORKERS: u32 = 8;
/// Workers on the CPU by default: one per core, up to this many.
const DEFAULT_WORKERS: u32 = 4;
/// What all CPU workers' weights may take in memory together, in bytes: each worker
/// holds its own f32 copy (twice an f16 file's size), so large models get fewer.
const WORKER_MEMORY_BUDGET: f64 = 1.5e9;

type Shared = Rc<RefCell<App>>;

/// The elements of `static/index.html` the page drives.
struct Dom {
    document: Document,
    body: HtmlElement,
    category: HtmlSelectElement,
    backend: HtmlSelectElement,
    file: HtmlInputElement,
    drop: HtmlElement,
    progress: HtmlProgressElement,
    progress_label: HtmlElement,
    status: HtmlElement,
    messages: HtmlElement,
    result: HtmlElement,
    result_title: HtmlElement,
    timing: HtmlElement,
    view: HtmlCanvasElement,
    heat: HtmlCanvasElement,
    heat_toggle: HtmlInputElement,
    heat_attribute: HtmlSelectElement,
    attributes: HtmlElement,
    history: HtmlElement,
    csv: HtmlButtonElement,
}

impl Dom {
    fn find(document: Document) -> Result<Self, WebError> {
        let body = document
            .body()
            .ok_or_else(|| WebError::Browser("the page has no <body>".into()))?;
        Ok(Self {
            category: by_id(&document, "category")?,
            backend: by_id(&document, "backend")?,
            file: by_id(&document, "file")?,
            drop: by_id(&document, "drop")?,
            progress: by_id(&document, "progress")?,
            progress_label: by_id(&document, "progress-label")?,
            status: by_id(&document, "status")?,
            messages: by_id(&document, "messages")?,
            result: by_id(&document, "result")?,
            result_title: by_id(&document, "result-title")?,
            timing: by_id(&document, "timing")?,
            view: by_id(&document, "view")?,
            heat: by_id(&document, "heat")?,
            heat_toggle: by_id(&document, "heat-toggle")?,
            heat_attribute: by_id(&document, "heat-attribute")?,
            attributes: by_id(&document, "attributes")?,
            history: by_id(&document, "history")?,
            csv: by_id(&document, "csv")?,
            body,
            document,
        })
    }

    fn element(&self, tag: &str, class: &str, text: &str) -> Result<Element, WebError> {
        let element = self.document.create_element(tag)?;
        if !class.is_empty() {
            element.set_class_name(class);
        }
        if !text.is_empty() {
            element.set_text_content(Some(text));
        }
        Ok(element)
    }

    /// Creates an element and appends it to `parent`.
    fn add(
        &self,
        parent: &Element,
        tag: &str,
        class: &str,
        text: &str,
    ) -> Result<Element, WebError> {
        let element = self.element(tag, class, text)?;
        parent.append_child(&element)?;
        Ok(element)
    }

    fn set_state(&self, key: &str, value: &str) {
        // Setting an attribute on <body> cannot fail for these names.
        let _ = self.body.set_attribute(&format!("data-{key}"), value);
    }
}

fn by_id<T: JsCast>(document: &Document, id: &str) -> Result<T, WebError> {
    document
        .get_element_by_id(id)
        .ok_or_else(|| WebError::Browser(format!("the page has no element #{id}")))?
        .dyn_into::<T>()
        .map_err(|_| WebError::Browser(format!("#{id} is not the kind of element expected")))
}

/// A photo waiting for the worker.
struct Pending {
    job: u32,
    name: String,
    bytes: Vec<u8>,
}

/// A worker that joins the first one on the CPU.
struct Helper {
    /// Names this helper in its handlers (helpers come and go).
    id: u32,
    worker: Worker,
    handlers: Vec<Closure<dyn FnMut(Event)>>,
    /// Its `blob:` script, revoked once it has started.
    url: Option<String>,
    ready: bool,
    in_flight: Option<Pending>,
}

/// A tagged photo kept for the history and the CSV.
struct Done {
    result: TagResult,
    view: Vec<u8>,
}

struct App {
    dom: Dom,
    /// Base URL of the page, for the worker's files and the export.
    base: String,
    models_url: String,
    worker: Option<Worker>,
    worker_handlers: Vec<Closure<dyn FnMut(Event)>>,
    worker_started: bool,
    /// The worker's `blob:` script, revoked once the worker has read it.
    worker_url: Option<String>,
    /// The last CSV download's `blob:` URL, revoked at the next download.
    csv_url: Option<String>,
    /// What the backend control says.
    choice: BackendChoice,
    /// WebGPU crashed in this page: `auto` means the CPU from now on.
    gpu_failed: bool,
    category: Option<String>,
    /// A model is loaded and no load is pending.
    ready: bool,
    /// The job the worker is tagging.
    in_flight: Option<Pending>,
    /// Workers beside the first on the CPU.
    helpers: Vec<Helper>,
    next_helper: u32,
    /// Workers asked for with `?workers=`.
    workers_wanted: Option<u32>,
    /// The export's weight precision (from its manifest), for the memory estimate.
    precision: String,
    /// Photos the helpers tagged.
    helper_tagged: u32,
    queue: VecDeque<Pending>,
    next_job: u32,
    /// Results that came back before an earlier photo's, shown once it has.
    held: BTreeMap<u32, Done>,
    /// Since when photos have been waiting or in a worker (`Date.now()`), and the time
    /// so spent before.
    busy_since: Option<f64>,
    busy_ms: f64,
    done: Vec<Done>,
    /// Index in `done` of the result on show.
    shown: Option<usize>,
    errors: u32,
    backend: Option<BackendKind>,
}

/// Starts the page.
pub fn run() -> Result<(), WebError> {
    std::panic::set_hook(Box::new(|info| {
        report_on_status(&format!("The page hit a bug: {info}"));
    }));
    let window = web_sys::window().ok_or_else(|| WebError::Browser("no window".into()))?;
    let document = window
        .document()
        .ok_or_else(|| WebError::Browser("no document".into()))?;
    let dom = Dom::find(document.clone())?;
    let href = window.location().href()?;
    let base = document.base_uri()?.unwrap_or(href);
    let params = web_sys::UrlSearchParams::new_with_str(&window.location().search()?)?;
    let choice = params
        .get("backend")
        .and_then(|b| BackendChoice::parse(&b))
        .unwrap_or_default();
    dom.backend.set_value(choice.as_str());
    let models = params
        .get("models")
        .unwrap_or_else(|| DEFAULT_MODELS.into());
    let workers_wanted = params
        .get("workers")
        .and_then(|w| w.trim().parse::<u32>().ok())
        .map(|w| w.clamp(1, MAX_WORKERS));
    let mut models_url = Url::new_with_base(&models, &base)?.href();
    if !models_url.ends_with('/') {
        models_url.push('/');
    }
    let app = App {
        dom,
        base,
        models_url,
        worker: None,
        worker_handlers: Vec::new(),
        worker_started: false,
        worker_url: None,
        csv_url: None,
        choice,
        gpu_failed: false,
        category: params.get("category"),
        ready: false,
        in_flight: None,
        helpers: Vec::new(),
        next_helper: 1,
        workers_wanted,
        precision: String::new(),
        helper_tagged: 0,
        queue: VecDeque::new(),
        next_job: 1,
        held: BTreeMap::new(),
        busy_since: None,
        busy_ms: 0.0,
        done: Vec::new(),
        shown: None,
        errors: 0,
        backend: None,
    };
    app.dom.set_state("state", "starting");
    let shared = Rc::new(RefCell::new(app));
    wire(&shared)?;
    start_worker(&shared)?;
    // Handlers hold weak references; this one strong reference keeps the page's state
    // alive for as long as the page is open.
    std::mem::forget(shared);
    Ok(())
}

/// Shows an error that stopped the page from starting (before `run` could set up its
/// own message area).
pub fn fatal(error: &WebError) {
    report_on_status(&format!("The page could not start: {error}"));
}

/// Logs `message` to the console and puts it in the page's `#status` element, found
/// afresh (it works before the page's state exists and after a panic).
fn report_on_status(message: &str) {
    web_sys::console::error_1(&JsValue::from_str(message));
    let status = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("status"));
    if let Some(status) = status {
        status.set_text_content(Some(message));
    }
}

fn listen<E: JsCast + 'static>(
    target: &web_sys::EventTarget,
    event: &str,
    shared: &Shared,
    handler: impl Fn(&Shared, E) -> Result<(), WebError> + 'static,
) -> Result<(), WebError> {
    let weak: Weak<RefCell<App>> = Rc::downgrade(shared);
    let closure = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        let Some(shared) = weak.upgrade() else { return };
        let Ok(event) = event.dyn_into::<E>() else {
            return;
        };
        if let Err(e) = handler(&shared, event) {
            report(&shared, &e.to_string());
        }
    });
    target.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())?;
    // Page controls live as long as the page.
    closure.forget();
    Ok(())
}

fn wire(shared: &Shared) -> Result<(), WebError> {
    let app = shared.borrow();
    let dom = &app.dom;
    listen(&dom.category, "change", shared, |shared, _: Event| {
        let category = shared.borrow().dom.category.value();
        shared.borrow_mut().category = Some(category);
        load(shared)
    })?;
    listen(&dom.backend, "change", shared, |shared, _: Event| {
        let value = shared.borrow().dom.backend.value();
        shared.borrow_mut().choice = BackendChoice::parse(&value).unwrap_or_default();
        load(shared)
    })?;
    listen(&dom.file, "change", shared, |shared, _: Event| {
        let input = shared.borrow().dom.file.clone();
        if let Some(files) = input.files() {
            add_files(shared, &files);
        }
        // Choosing the same file again must fire `change` again.
        input.set_value("");
        Ok(())
    })?;
    for name in ["dragenter", "dragover"] {
        listen(
            &dom.drop,
            name,
            shared,
            |shared, event: web_sys::DragEvent| {
                event.prevent_default();
                shared.borrow().dom.drop.class_list().add_1("over")?;
                Ok(())
            },
        )?;
    }
    listen(&dom.drop, "dragleave", shared, |shared, _: Event| {
        shared.borrow().dom.drop.class_list().remove_1("over")?;
        Ok(())
    })?;
    listen(
        &dom.drop,
        "drop",
        shared,
        |shared, event: web_sys::DragEvent| {
            event.prevent_default();
            shared.borrow().dom.drop.class_list().remove_1("over")?;
            if let Some(files) = event.data_transfer().and_then(|d| d.files()) {
                add_files(shared, &files);
            }
            Ok(())
        },
    )?;
    listen(
        &dom.document,
        "paste",
        shared,
        |shared, event: web_sys::ClipboardEvent| {
            if let Some(files) = event.clipboard_data().and_then(|d| d.files()) {
                if files.length() > 0 {
                    event.prevent_default();
                    add_files(shared, &files);
                }
            }
            Ok(())
        },
    )?;
    listen(&dom.heat_toggle, "change", shared, |shared, _: Event| {
        draw_heat(&shared.borrow())
    })?;
    listen(&dom.heat_attribute, "change", shared, |shared, _: Event| {
        draw_heat(&shared.borrow())
    })?;
    listen(&dom.csv, "click", shared, |shared, _: Event| {
        download_csv(&mut shared.borrow_mut())
    })?;
    Ok(())
}

/// Starts (or restarts) the first worker. Its helpers go with it.
fn start_worker(shared: &Shared) -> Result<(), WebError> {
    let mut app = shared.borrow_mut();
    stop_helpers(&mut app);
    if let Some(old) = app.worker.take() {
        old.set_onmessage(None);
        old.set_onerror(None);
        old.terminate();
    }
    app.worker_handlers.clear();
    app.worker_started = false;
    app.ready = false;

    let (worker, url) = spawn_worker(&app.base)?;
    app.worker_handlers = listen_to_worker(&worker, shared, on_worker_message, worker_crashed);
    app.worker = Some(worker);
    app.dom.set_state("state", "starting");
    app.dom
        .status
        .set_text_content(Some("Starting the worker…"));
    // The worker has read the blob once it reports `Started`; the URL is revoked then.
    if let Some(old) = app.worker_url.replace(url) {
        Url::revoke_object_url(&old)?;
    }
    Ok(())
}

/// A worker started from a `blob:` script that loads the worker's WebAssembly (a
/// worker started from a `blob:` URL is governed by the page's Content-Security-Policy,
/// so the policy also confines what the worker may fetch), and the script's URL.
fn spawn_worker(base: &str) -> Result<(Worker, String), WebError> {
    let js = Url::new_with_base("worker.js", base)?.href();
    let wasm = Url::new_with_base("worker_bg.wasm", base)?.href();
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let source = format!(
        "importScripts({});wasm_bindgen({{module_or_path:{}}});",
        quote(&js),
        quote(&wasm)
    );
    let options = BlobPropertyBag::new();
    options.set_type("text/javascript");
    let blob = Blob::new_with_str_sequence_and_options(
        &js_sys::Array::of1(&JsValue::from_str(&source)),
        &options,
    )?;
    let url = Url::create_object_url_with_blob(&blob)?;
    match Worker::new(&url) {
        Ok(worker) => Ok((worker, url)),
        Err(e) => {
            let _ = Url::revoke_object_url(&url);
            Err(e.into())
        }
    }
}

/// Hands `worker`'s messages to `on_data` and its failure to `on_crash`; returns the
/// handlers, which must live as long as the worker.
fn listen_to_worker(
    worker: &Worker,
    shared: &Shared,
    on_data: impl Fn(&Shared, &JsValue) -> Result<(), WebError> + 'static,
    on_crash: impl Fn(&Shared, &str) + 'static,
) -> Vec<Closure<dyn FnMut(Event)>> {
    let weak = Rc::downgrade(shared);
    let on_message = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        let Some(shared) = weak.upgrade() else { return };
        let Ok(event) = event.dyn_into::<MessageEvent>() else {
            return;
        };
        if let Err(e) = on_data(&shared, &event.data()) {
            report(&shared, &e.to_string());
        }
    });
    let weak = Rc::downgrade(shared);
    let on_error = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        let Some(shared) = weak.upgrade() else { return };
        event.prevent_default();
        let message = event
            .dyn_ref::<web_sys::ErrorEvent>()
            .map(|e| e.message())
            .unwrap_or_else(|| "the worker stopped".into());
        on_crash(&shared, &message);
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    vec![on_message, on_error]
}

/// How many workers the CPU gets for a model whose weights file has `weights_bytes`.
fn workers_for(app: &App, weights_bytes: u64) -> u32 {
    let cores = web_sys::window()
        .map(|w| w.navigator().hardware_concurrency())
        .unwrap_or(1.0);
    let wanted = app
        .workers_wanted
        .unwrap_or_else(|| (cores as u32).clamp(1, DEFAULT_WORKERS));
    // In memory each worker holds f32 weights, plus room for the activations.
    let expand = if app.precision == "f16" { 2.0 } else { 1.0 };
    let per_worker = weights_bytes as f64 * expand + 64e6;
    let fit = (WORKER_MEMORY_BUDGET / per_worker).floor().max(1.0) as u32;
    wanted.min(fit).max(1)
}

/// Starts the helpers the CPU gets beside the first worker (which has just loaded its
/// model there); each loads the same category from the browser's cache.
fn start_helpers(shared: &Shared, weights_bytes: u64) -> Result<(), WebError> {
    let mut app = shared.borrow_mut();
    let wanted = workers_for(&app, weights_bytes).saturating_sub(1) as usize;
    while app.helpers.len() < wanted {
        let (worker, url) = spawn_worker(&app.base)?;
        let id = app.next_helper;
        app.next_helper += 1;
        let handlers = listen_to_worker(
            &worker,
            shared,
            move |shared, data| on_helper_message(shared, id, data),
            move |shared, message| helper_failed(shared, id, message),
        );
        app.helpers.push(Helper {
            id,
            worker,
            handlers,
            url: Some(url),
            ready: false,
            in_flight: None,
        });
    }
    Ok(())
}

/// Stops every helper; the photos they held go back to the front of the queue.
fn stop_helpers(app: &mut App) {
    for index in (0..app.helpers.len()).rev() {
        remove_helper(app, index);
    }
    show_workers(app);
}

/// Stops one helper, its photo back in the queue.
fn remove_helper(app: &mut App, index: usize) {
    let helper = app.helpers.remove(index);
    helper.worker.set_onmessage(None);
    helper.worker.set_onerror(None);
    helper.worker.terminate();
    if let Some(url) = &helper.url {
        let _ = Url::revoke_object_url(url);
    }
    if let Some(pending) = helper.in_flight {
        requeue(app, pending);
    }
    // The handlers may be the ones running now: dropped once they have returned.
    let handlers = helper.handlers;
    wasm_bindgen_futures::spawn_local(async move { drop(handlers) });
}

/// Puts a photo back in the queue, in the order photos were given.
fn requeue(app: &mut App, pending: Pending) {
    let at = app.queue.partition_point(|p| p.job < pending.job);
    app.queue.insert(at, pending);
}

/// The workers ready to tag: the first (once its model is loaded) and the helpers.
fn ready_workers(app: &App) -> usize {
    usize::from(app.ready) + app.helpers.iter().filter(|h| h.ready).count()
}

/// `data-workers`: the workers ready to tag, also named in the status while idle.
fn show_workers(app: &App) {
    let ready = ready_workers(app);
    app.dom.set_state("workers", &ready.to_string());
    if ready > 1 && app.busy_since.is_none() {
        let category = app.category.as_deref().unwrap_or_default();
        app.dom
            .status
            .set_text_content(Some(&format!("Ready: {category} on {}.", engine_name(app))));
    }
}

/// What runs the network, for the status line: the backend, and the number of
/// workers when more than one is ready.
fn engine_name(app: &App) -> String {
    let adapter = app
        .dom
        .body
        .get_attribute("data-adapter")
        .unwrap_or_default();
    let ready = ready_workers(app);
    if ready > 1 {
        format!("{adapter}, {ready} workers")
    } else {
        adapter
    }
}

/// A message from helper `id`.
fn on_helper_message(shared: &Shared, id: u32, data: &JsValue) -> Result<(), WebError> {
    let (message, bytes) = unpack::<FromWorker>(data)?;
    let mut app = shared.borrow_mut();
    let Some(index) = app.helpers.iter().position(|h| h.id == id) else {
        return Ok(());
    };
    match message {
        FromWorker::Started => {
            if let Some(url) = app.helpers[index].url.take() {
                Url::revoke_object_url(&url)?;
            }
            let message = ToWorker::Load {
                models_url: app.models_url.clone(),
                category: app.category.clone(),
                backend: BackendChoice::Cpu,
            };
            let (packed, transfer) = pack(&message, None)?;
            app.helpers[index]
                .worker
                .post_message_with_transfer(&packed, &transfer)?;
        }
        FromWorker::Manifest { .. } | FromWorker::Progress { .. } => {}
        FromWorker::Ready { backend, .. } => {
            if backend == BackendKind::Cpu {
                app.helpers[index].ready = true;
            } else {
                remove_helper(&mut app, index);
            }
            show_workers(&app);
            drop(app);
            pump(shared)?;
        }
        FromWorker::Tagged { job, result } => {
            let pending = app.helpers[index].in_flight.take();
            app.helper_tagged += 1;
            let count = app.helper_tagged.to_string();
            app.dom.set_state("helper-tagged", &count);
            drop(app);
            finish(shared, pending, job, result, bytes)?;
        }
        FromWorker::Failed {
            job: Some(_),
            message,
        } => {
            app.helpers[index].in_flight = None;
            drop(app);
            report(shared, &message);
            publish(shared)?;
            pump(shared)?;
        }
        FromWorker::Failed { job: None, message } => {
            // The first worker loaded this model; a helper that cannot is left out.
            web_sys::console::warn_1(&JsValue::from_str(&format!(
                "a helper worker could not load the model: {message}"
            )));
            remove_helper(&mut app, index);
            show_workers(&app);
            drop(app);
            pump(shared)?;
        }
        FromWorker::Crashed { message } => {
            drop(app);
            helper_failed(shared, id, &message);
        }
    }
    Ok(())
}

/// Helper `id` stopped: its photo goes to another worker.
fn helper_failed(shared: &Shared, id: u32, message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(&format!(
        "a helper worker stopped: {message}"
    )));
    {
        let mut app = shared.borrow_mut();
        if let Some(index) = app.helpers.iter().position(|h| h.id == id) {
            remove_helper(&mut app, index);
        }
        show_workers(&app);
    }
    if let Err(e) = pump(shared) {
        report(shared, &e.to_string());
    }
}

impl App {
    fn send(&self, message: &ToWorker, bytes: Option<&[u8]>) -> Result<(), WebError> {
        let worker = self
            .worker
            .as_ref()
            .ok_or_else(|| WebError::Browser("the worker is not running".into()))?;
        let (packed, transfer) = pack(message, bytes)?;
        worker.post_message_with_transfer(&packed, &transfer)?;
        Ok(())
    }

    /// The backend to ask the worker for.
    fn effective_choice(&self) -> BackendChoice {
        if self.gpu_failed && self.choice == BackendChoice::Auto {
            BackendChoice::Cpu
        } else {
            self.choice
        }
    }

    fn message(&self, kind: &str, text: &str) -> Result<(), WebError> {
        let item = self.dom.element("li", kind, text)?;
        self.dom.messages.prepend_with_node_1(&item)?;
        Ok(())
    }
}

fn report(shared: &Shared, text: &str) {
    let mut app = shared.borrow_mut();
    app.errors += 1;
    let errors = app.errors.to_string();
    app.dom.set_state("errors", &errors);
    if app.message("error", text).is_err() {
        web_sys::console::error_1(&JsValue::from_str(text));
    }
}

/// Asks the worker for the chosen category and backend.
fn load(shared: &Shared) -> Result<(), WebError> {
    let mut app = shared.borrow_mut();
    if !app.worker_started {
        // `Started` will trigger the load.
        return Ok(());
    }
    app.ready = false;
    stop_helpers(&mut app);
    app.dom.set_state("state", "loading");
    app.dom.status.set_text_content(Some("Loading the model…"));
    let message = ToWorker::Load {
        models_url: app.models_url.clone(),
        category: app.category.clone(),
        backend: app.effective_choice(),
    };
    app.send(&message, None)
}

fn add_files(shared: &Shared, files: &FileList) {
    let files: Vec<File> = (0..files.length()).filter_map(|i| files.get(i)).collect();
    let shared = shared.clone();
    // Read in order, one after another, so photos are tagged in the order given.
    wasm_bindgen_futures::spawn_local(async move {
        for file in files {
            let name = file.name();
            if file.size() > MAX_FILE_BYTES {
                report(
                    &shared,
                    &format!(
                        "{name}: the file is {:.1} MB; the page takes photos up to {:.0} MB",
                        file.size() / 1e6,
                        MAX_FILE_BYTES / 1e6
                    ),
                );
                continue;
            }
            let bytes = match JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => js_sys::Uint8Array::new(&buffer).to_vec(),
                Err(e) => {
                    report(
                        &shared,
                        &format!("{name}: cannot be read: {}", describe_js(&e)),
                    );
                    continue;
                }
            };
            {
                let mut app = shared.borrow_mut();
                let job = app.next_job;
                app.next_job += 1;
                app.queue.push_back(Pending { job, name, bytes });
            }
            if let Err(e) = pump(&shared) {
                report(&shared, &e.to_string());
            }
        }
    });
}

/// Sends waiting photos to the workers that are free.
fn pump(shared: &Shared) -> Result<(), WebError> {
    let mut app = shared.borrow_mut();
    if !app.ready {
        return Ok(());
    }
    loop {
        // The first worker, else the first free helper.
        let target = if app.in_flight.is_none() {
            Some(None)
        } else {
            app.helpers
                .iter()
                .position(|h| h.ready && h.in_flight.is_none())
                .map(Some)
        };
        let Some(target) = target else { break };
        let Some(pending) = app.queue.pop_front() else {
            break;
        };
        let waiting = app.queue.len();
        let status = if waiting > 0 {
            format!("Tagging {} ({waiting} more waiting)…", pending.name)
        } else {
            format!("Tagging {}…", pending.name)
        };
        app.dom.status.set_text_content(Some(&status));
        let message = ToWorker::Tag {
            job: pending.job,
            name: pending.name.clone(),
        };
        let sent = match target {
            None => app.send(&message, Some(&pending.bytes)),
            Some(index) => pack(&message, Some(&pending.bytes)).and_then(|(packed, transfer)| {
                Ok(app.helpers[index]
                    .worker
                    .post_message_with_transfer(&packed, &transfer)?)
            }),
        };
        if let Err(e) = sent {
            app.queue.push_front(pending);
            return Err(e);
        }
        match target {
            None => app.in_flight = Some(pending),
            Some(index) => app.helpers[index].in_flight = Some(pending),
        }
    }
    show_busy(&mut app);
    Ok(())
}

/// A photo's result, from whichever worker tagged it: shown in turn (see [`publish`]).
fn finish(
    shared: &Shared,
    pending: Option<Pending>,
    job: u32,
    result: TagResult,
    view: Option<Vec<u8>>,
) -> Result<(), WebError> {
    if pending.as_ref().map(|p| p.job) != Some(job) {
        web_sys::console::warn_1(&JsValue::from_str("a result for another photo"));
    }
    shared.borrow_mut().held.insert(
        job,
        Done {
            result,
            view: view.unwrap_or_default(),
        },
    );
    publish(shared)?;
    pump(shared)
}

/// Moves the results that came back into the history, in the order the photos were
/// given: a result waits while an earlier photo is still in a worker or the queue.
fn publish(shared: &Shared) -> Result<(), WebError> {
    let mut app = shared.borrow_mut();
    let open = app
        .in_flight
        .iter()
        .chain(app.helpers.iter().filter_map(|h| h.in_flight.as_ref()))
        .chain(app.queue.iter())
        .map(|p| p.job)
        .min();
    let ready = release_in_order(&mut app.held, open);
    let added = !ready.is_empty();
    for done in ready {
        app.done.push(done);
        let index = app.done.len() - 1;
        add_history_row(shared.clone(), &app, index)?;
    }
    if added {
        let index = app.done.len() - 1;
        app.shown = Some(index);
        show_result(&app, index)?;
        app.dom.set_state("tagged", &app.done.len().to_string());
        app.dom.csv.set_disabled(false);
    }
    show_busy(&mut app);
    Ok(())
}

/// `data-state` busy while photos wait or are in a worker, ready once the last is
/// done; the time spent busy adds up in `data-busy-ms`.
fn show_busy(app: &mut App) {
    let busy = app.in_flight.is_some()
        || app.helpers.iter().any(|h| h.in_flight.is_some())
        || !app.queue.is_empty()
        || !app.held.is_empty();
    let now = js_sys::Date::now();
    if busy {
        app.busy_since.get_or_insert(now);
        app.dom.set_state("state", "busy");
        return;
    }
    let Some(since) = app.busy_since.take() else {
        return;
    };
    app.busy_ms += now - since;
    let total = format!("{:.0}", app.busy_ms);
    app.dom.set_state("busy-ms", &total);
    if !app.ready {
        return;
    }
    app.dom.set_state("state", "ready");
    let engine = engine_name(app);
    app.dom
        .status
        .set_text_content(Some(&format!("Ready ({engine}). Drop more photos.")));
}

fn on_worker_message(shared: &Shared, data: &JsValue) -> Result<(), WebError> {
    let (message, bytes) = unpack::<FromWorker>(data)?;
    match message {
        FromWorker::Started => {
            {
                let mut app = shared.borrow_mut();
                app.worker_started = true;
                if let Some(url) = app.worker_url.take() {
                    Url::revoke_object_url(&url)?;
                }
            }
            load(shared)?;
        }
        FromWorker::Manifest {
            categories,
            input_size,
            precision,
        } => {
            let app = shared.borrow();
            let select = &app.dom.category;
            select.set_inner_html("");
            for name in &categories {
                let option = HtmlOptionElement::new_with_text_and_value(name, name)?;
                select.add_with_html_option_element(&option)?;
            }
            if let Some(current) = &app.category {
                select.set_value(current);
            }
            app.dom.set_state("input-size", &input_size.to_string());
            app.dom.set_state("precision", &precision);
            drop(app);
            shared.borrow_mut().precision = precision;
        }
        FromWorker::Progress {
            category,
            loaded,
            total,
        } => {
            let app = shared.borrow();
            app.dom.progress.set_max(total.max(1) as f64);
            app.dom.progress.set_value(loaded as f64);
            app.dom.progress.class_list().remove_1("hidden")?;
            app.dom.progress_label.set_text_content(Some(&format!(
                "Downloading the {category} model: {} of {}",
                megabytes(loaded),
                megabytes(total)
            )));
        }
        FromWorker::Ready {
            category,
            attributes,
            backend,
            backend_name,
            weights_source,
            weights_bytes,
            notice,
        } => {
            {
                let mut app = shared.borrow_mut();
                app.ready = true;
                app.backend = Some(backend);
                app.category = Some(category.clone());
                let dom = &app.dom;
                dom.category.set_value(&category);
                dom.set_state("state", "ready");
                dom.set_state(
                    "backend",
                    match backend {
                        BackendKind::Webgpu => "webgpu",
                        BackendKind::Cpu => "cpu",
                    },
                );
                dom.set_state("adapter", &backend_name);
                dom.set_state("weights-source", weights_source.as_str());
                dom.progress.class_list().add_1("hidden")?;
                let source = match weights_source.as_str() {
                    "cache" => "from the browser's cache",
                    "network" => "downloaded",
                    _ => "already loaded",
                };
                dom.progress_label.set_text_content(Some(&format!(
                    "Weights {source} ({}).",
                    megabytes(weights_bytes)
                )));
                let engine = match backend {
                    BackendKind::Webgpu => format!("WebGPU: {backend_name}"),
                    BackendKind::Cpu => backend_name.clone(),
                };
                dom.status
                    .set_text_content(Some(&format!("Ready: {category} on {engine}.")));
                dom.heat_attribute.set_inner_html("");
                for (i, name) in attributes.iter().enumerate() {
                    let option = HtmlOptionElement::new_with_text_and_value(name, &i.to_string())?;
                    dom.heat_attribute.add_with_html_option_element(&option)?;
                }
                // Notices describe the backend in use: replace the last one's.
                let stale = dom.messages.query_selector_all("li.notice")?;
                for i in 0..stale.length() {
                    if let Some(node) = stale.item(i) {
                        dom.messages.remove_child(&node)?;
                    }
                }
                if let Some(notice) = notice {
                    app.message("notice", &notice)?;
                }
                show_workers(&app);
            }
            if backend == BackendKind::Cpu {
                start_helpers(shared, weights_bytes)?;
            }
            pump(shared)?;
        }
        FromWorker::Tagged { job, result } => {
            let pending = shared.borrow_mut().in_flight.take();
            finish(shared, pending, job, result, bytes)?;
        }
        FromWorker::Failed { job, message } => {
            match job {
                Some(_) => {
                    shared.borrow_mut().in_flight = None;
                    report(shared, &message);
                    publish(shared)?;
                }
                None => {
                    {
                        let mut app = shared.borrow_mut();
                        app.ready = false;
                        stop_helpers(&mut app);
                        app.dom.set_state("state", "error");
                        app.dom
                            .status
                            .set_text_content(Some("The model could not be loaded."));
                    }
                    report(shared, &message);
                }
            }
            pump(shared)?;
        }
        FromWorker::Crashed { message } => worker_crashed(shared, &message),
    }
    Ok(())
}

/// The worker panicked or died. On WebGPU in `auto` mode the page carries on on the
/// CPU (retrying the photo in flight); otherwise it says what happened.
fn worker_crashed(shared: &Shared, message: &str) {
    let retry = {
        let mut app = shared.borrow_mut();
        let on_gpu = app.backend == Some(BackendKind::Webgpu) || app.backend.is_none();
        let retry = on_gpu && app.choice == BackendChoice::Auto && !app.gpu_failed;
        if retry {
            app.gpu_failed = true;
            if let Some(pending) = app.in_flight.take() {
                app.queue.push_front(pending);
            }
        } else {
            app.in_flight = None;
            app.ready = false;
            stop_helpers(&mut app);
            app.dom.set_state("state", "error");
        }
        retry
    };
    if retry {
        let note = format!("WebGPU failed ({message}); switched to the CPU.");
        let _ = shared.borrow().message("notice", &note);
        // Restart once this handler has returned: restarting drops the old worker's
        // handlers, this one among them.
        let shared = shared.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = start_worker(&shared) {
                report(&shared, &e.to_string());
            }
        });
    } else {
        report(
            shared,
            &format!("The worker stopped: {message}. Reload the page to retry."),
        );
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// The predictions of one photo as `trainer predict --json` lists them.
fn prediction_json(result: &TagResult) -> String {
    serde_json::json!({
        "image": result.image,
        "category": result.category,
        "attributes": result.attributes,
    })
    .to_string()
}

fn show_result(app: &App, index: usize) -> Result<(), WebError> {
    let Some(Done { result, view }) = app.done.get(index) else {
        return Ok(());
    };
    let dom = &app.dom;
    dom.result.class_list().remove_1("hidden")?;
    dom.result
        .set_attribute("data-json", &prediction_json(result))?;
    dom.result_title
        .set_text_content(Some(&format!("{} — {}", result.image, result.category)));
    let engine = &result.backend;
    dom.timing
        .set_attribute("data-millis", &result.millis.to_string())?;
    dom.timing.set_text_content(Some(&format!(
        "{:.1} ms on {engine}{}",
        result.millis,
        if result.first_run {
            " (the first photo after loading a model includes setting it up on \
                 the device; on WebGPU, compiling its kernels)"
        } else {
            ""
        }
    )));

    // The photo as the network saw it, with the heat map over it.
    let size = result.view_size;
    if view.len() == (size * size * 4) as usize {
        dom.view.set_width(size);
        dom.view.set_height(size);
        let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(view), size, size)?;
        context(&dom.view)?.put_image_data(&image, 0.0, 0.0)?;
    }
    draw_heat(app)?;

    dom.attributes.set_inner_html("");
    for prediction in &result.attributes {
        let row = dom.element("tr", "", "")?;
        row.set_attribute("data-attribute", &prediction.name)?;
        row.set_attribute("data-label", &prediction.label)?;
        dom.add(&row, "th", "", &prediction.name)?;
        dom.add(&row, "td", "label", &prediction.label)?;
        let bar_cell = dom.add(&row, "td", "bar", "")?;
        let bar: HtmlElement = dom
            .add(&bar_cell, "div", "fill", "")?
            .dyn_into()
            .map_err(|_| WebError::Browser("a <div> that is not an HTML element".into()))?;
        // Through the CSSOM: the page's CSP forbids `style` attributes.
        bar.style()
            .set_property("width", &format!("{:.1}%", prediction.prob * 100.0))?;
        dom.add(
            &row,
            "td",
            "prob",
            &format!("{:.1}%", prediction.prob * 100.0),
        )?;
        let mut others: Vec<(&String, &f32)> = prediction
            .probs
            .iter()
            .filter(|(class, _)| **class != prediction.label)
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(a.1));
        let runners: Vec<String> = others
            .iter()
            .take(RUNNERS_UP)
            .map(|(class, p)| format!("{class} {:.1}%", **p * 100.0))
            .collect();
        dom.add(&row, "td", "runners-up", &runners.join(" · "))?;
        dom.attributes.append_child(&row)?;
    }
    Ok(())
}

fn add_history_row(shared: Shared, app: &App, index: usize) -> Result<(), WebError> {
    let Some(Done { result, .. }) = app.done.get(index) else {
        return Ok(());
    };
    let dom = &app.dom;
    let row = dom.element("tr", "", "")?;
    row.set_attribute("data-json", &prediction_json(result))?;
    row.set_attribute("data-millis", &result.millis.to_string())?;
    dom.add(&row, "td", "", &result.image)?;
    dom.add(&row, "td", "", &result.category)?;
    let labels: Vec<&str> = result.attributes.iter().map(|a| a.label.as_str()).collect();
    dom.add(&row, "td", "", &labels.join(" · "))?;
    dom.add(&row, "td", "num", &format!("{:.1} ms", result.millis))?;
    dom.add(&row, "td", "backend", &result.backend)?;
    dom.history.append_child(&row)?;
    // Clicking a row shows that photo again.
    let target: web_sys::EventTarget = row.into();
    listen(&target, "click", &shared, move |shared, _: Event| {
        let mut app = shared.borrow_mut();
        app.shown = Some(index);
        show_result(&app, index)
    })
}

fn context(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, WebError> {
    canvas
        .get_context("2d")?
        .ok_or_else(|| WebError::Browser("no 2D canvas".into()))?
        .dyn_into()
        .map_err(|_| WebError::Browser("no 2D canvas".into()))
}

/// Draws the chosen attribute's spatial attention over the photo, or hides it.
fn draw_heat(app: &App) -> Result<(), WebError> {
    let dom = &app.dom;
    let result = app.shown.and_then(|i| app.done.get(i)).map(|d| &d.result);
    let index = dom.heat_attribute.selected_index();
    let map = result.and_then(|r| {
        usize::try_from(index)
            .ok()
            .and_then(|i| r.attention.maps.get(i))
            .map(|m| (r, m))
    });
    let Some((result, map)) = map.filter(|_| dom.heat_toggle.checked()) else {
        dom.heat.class_list().add_1("hidden")?;
        return Ok(());
    };
    let (width, height) = (
        result.attention.width as u32,
        result.attention.height as u32,
    );
    // Stretch the map's own range over the colour ramp: the sigmoid gate's values sit
    // in a narrow band, and the page shows where the head looks, not how much.
    let (lo, hi) = map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let rgba: Vec<u8> = map
        .iter()
        .flat_map(|&v| {
            let t = ((v - lo) / span).clamp(0.0, 1.0);
            [255, lerp(HEAT_GREEN, t), 0, lerp(HEAT_ALPHA, t)]
        })
        .collect();
    dom.heat.set_width(width);
    dom.heat.set_height(height);
    let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), width, height)?;
    context(&dom.heat)?.put_image_data(&image, 0.0, 0.0)?;
    dom.heat.class_list().remove_1("hidden")?;
    Ok(())
}

fn lerp((from, to): (f32, f32), t: f32) -> u8 {
    (from + (to - from) * t).round() as u8
}

/// Downloads every tagged photo as a submission-format CSV.
fn download_csv(app: &mut App) -> Result<(), WebError> {
    let rows: Vec<Row> = app
        .done
        .iter()
        .map(|d| Row {
            id: id_from_file_name(&d.result.image),
            category: d.result.category.clone(),
            labels: d
                .result
                .attributes
                .iter()
                .map(|a| a.label.clone())
                .collect(),
        })
        .collect();
    let options = BlobPropertyBag::new();
    options.set_type("text/csv");
    let blob = Blob::new_with_str_sequence_and_options(
        &js_sys::Array::of1(&JsValue::from_str(&to_csv(&rows))),
        &options,
    )?;
    let url = Url::create_object_url_with_blob(&blob)?;
    let link: HtmlAnchorElement = app
        .dom
        .document
        .create_element("a")?
        .dyn_into()
        .map_err(|_| WebError::Browser("cannot create a link".into()))?;
    link.set_href(&url);
    link.set_download("predictions.csv");
    link.click();
    // The download reads the URL after this returns; it is revoked at the next one.
    if let Some(old) = app.csv_url.replace(url) {
        Url::revoke_object_url(&old)?;
    }
    Ok(())
}
