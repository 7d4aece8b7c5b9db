//! The inference worker: reads the manifest, fetches a category's weights (with
//! progress, kept in Cache Storage), chooses the backend and tags photos, one message
//! at a time.
//!
//! Backend choice: `auto` probes `navigator.gpu.requestAdapter()` and uses Burn's wgpu
//! backend on WebGPU when the browser offers a hardware adapter; with no adapter, or
//! only a software fallback (`isFallbackAdapter`, e.g. SwiftShader, measured 30 to 120
//! times slower here than the CPU backend; see BENCHMARKS.md), it runs Burn's Flex
//! backend with model-core's kernels (wasm SIMD, one thread) and a notice says why.
//! `webgpu` and `cpu` force one. The probe runs before Burn touches WebGPU because Burn
//! panics when no adapter exists, and a panic leaves a WebAssembly instance unusable;
//! any other panic is reported to the page ([`FromWorker::Crashed`]), which restarts
//! the worker (on the CPU in `auto` mode).

use super::{describe_js, pack, unpack};
use crate::engine::{Tagged, Tagger};
use crate::protocol::{BackendChoice, BackendKind, FromWorker, ToWorker, WeightsSource};
use crate::WebError;
use burn::backend::wgpu::{init_setup_async, RuntimeOptions, WgpuDevice};
use burn::backend::{Flex, Wgpu};
use model_core::export::{WebManifest, MANIFEST_FILE};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, DedicatedWorkerGlobalScope, ReadableStreamDefaultReader, RequestCache, RequestInit,
    Response,
};

/// Name of the Cache Storage cache that keeps downloaded weights.
const WEIGHTS_CACHE: &str = "garment-tagger-weights-v1";
/// How the CPU backend is named on the page.
const CPU_NAME: &str = "CPU (WebAssembly SIMD)";
/// Progress messages are sent at most this many times per download.
const PROGRESS_STEPS: u64 = 100;

/// Starts the worker: installs the panic reporter and the message handler, then tells
/// the page it is listening.
pub fn run() -> Result<(), WebError> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().dyn_into().map_err(|_| {
        WebError::Browser("the worker program must run in a dedicated worker".into())
    })?;
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        web_sys::console::error_1(&JsValue::from_str(&message));
        if let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() {
            post(&scope, &FromWorker::Crashed { message }, None);
        }
    }));

    let queue: Rc<RefCell<VecDeque<JsValue>>> = Rc::default();
    let state = Rc::new(RefCell::new(Some(Worker::new(scope.clone()))));
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            queue.borrow_mut().push_back(event.data());
            wasm_bindgen_futures::spawn_local(drain(queue.clone(), state.clone()));
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    post(&scope, &FromWorker::Started, None);
    Ok(())
}

/// Handles queued messages in order. The worker state is taken out while a message is
/// handled, so a second `drain` started meanwhile finds none and leaves the queue to
/// the first.
async fn drain(queue: Rc<RefCell<VecDeque<JsValue>>>, state: Rc<RefCell<Option<Worker>>>) {
    let Some(mut worker) = state.borrow_mut().take() else {
        return;
    };
    loop {
        let next = queue.borrow_mut().pop_front();
        let Some(data) = next else { break };
        worker.handle(data).await;
    }
    *state.borrow_mut() = Some(worker);
}

fn post(scope: &DedicatedWorkerGlobalScope, message: &FromWorker, bytes: Option<&[u8]>) {
    let sent = pack(message, bytes)
        .and_then(|(packed, transfer)| Ok(scope.post_message_with_transfer(&packed, &transfer)?));
    if let Err(e) = sent {
        web_sys::console::error_1(&JsValue::from_str(&format!("posting to the page: {e}")));
    }
}

/// The loaded manifest and where it came from.
struct Export {
    url: String,
    manifest: WebManifest,
    /// Hash of the manifest's text: part of every cache key, so weights cached for an
    /// earlier export are never used with a new one.
    fingerprint: u64,
}

/// The loaded network on its backend (boxed: the worker holds one at a time).
enum Model {
    Cpu(Box<Tagger<Flex>>),
    Gpu(Box<Tagger<Wgpu<f32, i32, u32>>>),
}

struct Loaded {
    category: String,
    backend: BackendKind,
    model: Model,
    backend_name: String,
    /// Photos tagged since the model was loaded.
    tagged: u32,
}

/// What the worker knows about WebGPU (probed once; Burn sets up one device per
/// worker, the first time WebGPU is used).
enum Gpu {
    Unknown,
    Found {
        adapter: Adapter,
        /// Burn's device is set up.
        ready: bool,
    },
    Unavailable {
        reason: String,
    },
}

/// The adapter the browser offers.
#[derive(Clone)]
struct Adapter {
    name: String,
    /// A software implementation (`GPUAdapterInfo.isFallbackAdapter`).
    software: bool,
}

struct Worker {
    scope: DedicatedWorkerGlobalScope,
    export: Option<Export>,
    gpu: Gpu,
    loaded: Option<Loaded>,
}

impl Worker {
    fn new(scope: DedicatedWorkerGlobalScope) -> Self {
        Self {
            scope,
            export: None,
            gpu: Gpu::Unknown,
            loaded: None,
        }
    }

    async fn handle(&mut self, data: JsValue) {
        let (message, bytes) = match unpack::<ToWorker>(&data) {
            Ok(unpacked) => unpacked,
            Err(e) => {
                return post(
                    &self.scope,
                    &FromWorker::Failed {
                        job: None,
                        message: e.to_string(),
                    },
                    None,
                )
            }
        };
        match message {
            ToWorker::Load {
                models_url,
                category,
                backend,
            } => {
                if let Err(e) = self.load(&models_url, category, backend).await {
                    self.loaded = None;
                    post(
                        &self.scope,
                        &FromWorker::Failed {
                            job: None,
                            message: e.to_string(),
                        },
                        None,
                    );
                }
            }
            ToWorker::Tag { job, name } => {
                let bytes = bytes.unwrap_or_default();
                match self.tag(&name, &bytes).await {
                    Ok(tagged) => post(
                        &self.scope,
                        &FromWorker::Tagged {
                            job,
                            result: tagged.result,
                        },
                        Some(&tagged.view_rgba),
                    ),
                    Err(e) => post(
                        &self.scope,
                        &FromWorker::Failed {
                            job: Some(job),
                            message: format!("{name}: {e}"),
                        },
                        None,
                    ),
                }
            }
        }
    }

    /// Tags one photo and times it, whole pipeline (decode to labels).
    async fn tag(&mut self, name: &str, bytes: &[u8]) -> Result<Tagged, WebError> {
        let start = self.now();
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| WebError::Browser("no model is loaded yet".into()))?;
        let mut tagged = match &loaded.model {
            Model::Cpu(tagger) => tagger.tag(name, bytes).await?,
            Model::Gpu(tagger) => tagger.tag(name, bytes).await?,
        };
        tagged.result.first_run = loaded.tagged == 0;
        tagged.result.backend = loaded.backend_name.clone();
        loaded.tagged += 1;
        tagged.result.millis = self.now() - start;
        Ok(tagged)
    }

    fn now(&self) -> f64 {
        self.scope
            .performance()
            .map(|p| p.now())
            .unwrap_or_else(js_sys::Date::now)
    }

    async fn load(
        &mut self,
        models_url: &str,
        category: Option<String>,
        choice: BackendChoice,
    ) -> Result<(), WebError> {
        if self.export.as_ref().map(|e| e.url.as_str()) != Some(models_url) {
            self.loaded = None;
            self.export = Some(self.read_manifest(models_url).await?);
        }
        let export = self
            .export
            .as_ref()
            .ok_or_else(|| WebError::Browser("no manifest".into()))?;
        let category = match category {
            Some(name) => export.manifest.category(&name)?.clone(),
            None => export.manifest.categories.first().cloned().ok_or_else(|| {
                WebError::Browser(format!("{models_url}{MANIFEST_FILE} lists no categories"))
            })?,
        };

        let (backend, notice) = match (choice, self.adapter().await) {
            (BackendChoice::Cpu, _) => (BackendKind::Cpu, None),
            (BackendChoice::Webgpu, Ok(_)) => (BackendKind::Webgpu, None),
            (BackendChoice::Webgpu, Err(reason)) => {
                return Err(WebError::NoWebGpu(format!(
                    "WebGPU is not available: {reason}"
                )))
            }
            (BackendChoice::Auto, Ok(adapter)) if !adapter.software => (BackendKind::Webgpu, None),
            (BackendChoice::Auto, Ok(adapter)) => (
                BackendKind::Cpu,
                Some(format!(
                    "The only WebGPU adapter here ({}) is a software fallback, much slower \
                     than the CPU backend: running on the CPU. Choose WebGPU to use it anyway.",
                    adapter.name
                )),
            ),
            (BackendChoice::Auto, Err(reason)) => (
                BackendKind::Cpu,
                Some(format!(
                    "WebGPU is not available ({reason}); running on the CPU instead."
                )),
            ),
        };
        if backend == BackendKind::Webgpu {
            self.setup_gpu_device().await;
        }
        let export = self
            .export
            .as_ref()
            .ok_or_else(|| WebError::Browser("no manifest".into()))?;

        let already = self
            .loaded
            .as_ref()
            .is_some_and(|l| l.category == category.name && l.backend == backend);
        let weights_source = if already {
            WeightsSource::Memory
        } else {
            self.loaded = None;
            let (weights, source) = self.weights(export, &category).await?;
            let manifest = &export.manifest;
            let (model, backend_name) = match backend {
                BackendKind::Cpu => (
                    Model::Cpu(Box::new(Tagger::new(
                        manifest,
                        &category.name,
                        weights,
                        Default::default(),
                    )?)),
                    CPU_NAME.to_string(),
                ),
                BackendKind::Webgpu => {
                    let name = match &self.gpu {
                        Gpu::Found { adapter, .. } => adapter.name.clone(),
                        _ => String::from("WebGPU"),
                    };
                    (
                        Model::Gpu(Box::new(Tagger::new(
                            manifest,
                            &category.name,
                            weights,
                            WgpuDevice::default(),
                        )?)),
                        name,
                    )
                }
            };
            self.loaded = Some(Loaded {
                category: category.name.clone(),
                backend,
                model,
                backend_name,
                tagged: 0,
            });
            source
        };
        let backend_name = self
            .loaded
            .as_ref()
            .map(|l| l.backend_name.clone())
            .unwrap_or_default();
        post(
            &self.scope,
            &FromWorker::Ready {
                category: category.name.clone(),
                attributes: category.attributes.iter().map(|a| a.name.clone()).collect(),
                backend,
                backend_name,
                weights_source,
                weights_bytes: category.bytes,
                notice,
            },
            None,
        );
        Ok(())
    }

    async fn read_manifest(&self, models_url: &str) -> Result<Export, WebError> {
        let url = format!("{models_url}{MANIFEST_FILE}");
        // Revalidate every time: the manifest is small and says which weights are current.
        let init = RequestInit::new();
        init.set_cache(RequestCache::NoCache);
        let response = self.fetch(&url, Some(&init)).await?;
        let text = JsFuture::from(response.text()?)
            .await?
            .as_string()
            .ok_or_else(|| WebError::Browser(format!("{url}: the body is not text")))?;
        let manifest =
            WebManifest::from_json(&text).map_err(|e| WebError::Browser(format!("{url}: {e}")))?;
        post(
            &self.scope,
            &FromWorker::Manifest {
                categories: manifest.categories.iter().map(|c| c.name.clone()).collect(),
                input_size: manifest.preprocess.size,
                precision: format!("{:?}", manifest.precision).to_lowercase(),
            },
            None,
        );
        Ok(Export {
            url: models_url.to_string(),
            fingerprint: fnv1a(text.as_bytes()),
            manifest,
        })
    }

    async fn fetch(&self, url: &str, init: Option<&RequestInit>) -> Result<Response, WebError> {
        let promise = match init {
            Some(init) => self.scope.fetch_with_str_and_init(url, init),
            None => self.scope.fetch_with_str(url),
        };
        let response: Response = JsFuture::from(promise)
            .await
            .map_err(|e| WebError::Browser(format!("{url}: {}", describe_js(&e))))?
            .dyn_into()
            .map_err(|_| WebError::Browser(format!("{url}: fetch gave no response")))?;
        if !response.ok() {
            return Err(WebError::Browser(format!(
                "{url}: HTTP {} {}",
                response.status(),
                response.status_text()
            )));
        }
        Ok(response)
    }

    /// A category's weight file: from Cache Storage when it holds this export's copy,
    /// else downloaded (with progress) and stored there.
    async fn weights(
        &self,
        export: &Export,
        category: &model_core::export::ExportedCategory,
    ) -> Result<(Vec<u8>, WeightsSource), WebError> {
        let url = format!("{}{}", export.url, category.file);
        let key = format!(
            "{url}?bytes={}&manifest={:016x}",
            category.bytes, export.fingerprint
        );
        // Cache Storage needs a secure context (https or localhost); without it the
        // page still works and downloads the weights every time.
        let cache = match self.open_cache().await {
            Ok(cache) => Some(cache),
            Err(e) => {
                web_sys::console::warn_1(&JsValue::from_str(&format!(
                    "Cache Storage unavailable, weights will not be kept: {e}"
                )));
                None
            }
        };
        if let Some(cache) = &cache {
            let hit = JsFuture::from(cache.match_with_str(&key)).await?;
            if let Ok(response) = hit.dyn_into::<Response>() {
                let buffer = JsFuture::from(response.array_buffer()?).await?;
                let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
                if bytes.len() as u64 == category.bytes {
                    return Ok((bytes, WeightsSource::Cache));
                }
            }
        }

        let bytes = self.download(&url, &category.name, category.bytes).await?;
        if let Some(cache) = &cache {
            if let Err(e) = store(cache, &url, &key, &bytes).await {
                web_sys::console::warn_1(&JsValue::from_str(&format!(
                    "could not keep the weights in Cache Storage: {e}"
                )));
            }
        }
        Ok((bytes, WeightsSource::Network))
    }

    async fn open_cache(&self) -> Result<Cache, WebError> {
        let caches = self.scope.caches()?;
        JsFuture::from(caches.open(WEIGHTS_CACHE))
            .await?
            .dyn_into::<Cache>()
            .map_err(|_| WebError::Browser("caches.open gave no cache".into()))
    }

    /// Downloads `url` (`total` bytes, from the manifest) and reports progress.
    async fn download(&self, url: &str, category: &str, total: u64) -> Result<Vec<u8>, WebError> {
        let response = self.fetch(url, None).await?;
        let body = response
            .body()
            .ok_or_else(|| WebError::Browser(format!("{url}: empty response")))?;
        let reader: ReadableStreamDefaultReader = body
            .get_reader()
            .dyn_into()
            .map_err(|_| WebError::Browser(format!("{url}: the body cannot be read")))?;
        let mut bytes = Vec::with_capacity(total as usize);
        let step = (total / PROGRESS_STEPS).max(1);
        let mut reported = 0u64;
        let progress = |loaded: u64| FromWorker::Progress {
            category: category.to_string(),
            loaded,
            total,
        };
        post(&self.scope, &progress(0), None);
        loop {
            let chunk = JsFuture::from(reader.read()).await?;
            let done = js_sys::Reflect::get(&chunk, &JsValue::from_str("done"))?
                .as_bool()
                .unwrap_or(true);
            if done {
                break;
            }
            let value = js_sys::Reflect::get(&chunk, &JsValue::from_str("value"))?;
            let array = value
                .dyn_ref::<js_sys::Uint8Array>()
                .ok_or_else(|| WebError::Browser(format!("{url}: a body chunk is not bytes")))?;
            bytes.extend_from_slice(&array.to_vec());
            let loaded = bytes.len() as u64;
            if loaded - reported >= step {
                reported = loaded;
                post(&self.scope, &progress(loaded), None);
            }
        }
        if bytes.len() as u64 != total {
            return Err(WebError::Browser(format!(
                "{url}: received {} bytes but the manifest says {total}; export the models again \
                 or check the server",
                bytes.len()
            )));
        }
        post(&self.scope, &progress(total), None);
        Ok(bytes)
    }

    /// The browser's WebGPU adapter, or why there is none (asked once).
    async fn adapter(&mut self) -> Result<Adapter, String> {
        if let Gpu::Unknown = self.gpu {
            self.gpu = match probe_adapter(&self.scope).await {
                Ok(adapter) => Gpu::Found {
                    adapter,
                    ready: false,
                },
                Err(reason) => Gpu::Unavailable { reason },
            };
        }
        match &self.gpu {
            Gpu::Found { adapter, .. } => Ok(adapter.clone()),
            Gpu::Unavailable { reason } => Err(reason.clone()),
            Gpu::Unknown => Err("not probed".into()),
        }
    }

    /// Sets up Burn's WebGPU device, once (after [`Self::adapter`] found one).
    async fn setup_gpu_device(&mut self) {
        if let Gpu::Found { ready, .. } = &mut self.gpu {
            if !*ready {
                init_setup_async::<burn::backend::wgpu::graphics::WebGpu>(
                    &WgpuDevice::default(),
                    RuntimeOptions::default(),
                )
                .await;
                *ready = true;
            }
        }
    }
}

/// Keeps `bytes` in the cache under `key`, dropping copies from older exports.
async fn store(cache: &Cache, url: &str, key: &str, bytes: &[u8]) -> Result<(), WebError> {
    let keys = JsFuture::from(cache.keys()).await?;
    for request in js_sys::Array::from(&keys).iter() {
        if let Some(request) = request.dyn_ref::<web_sys::Request>() {
            let old = request.url();
            if old.starts_with(&format!("{url}?")) && old != key {
                JsFuture::from(cache.delete_with_str(&old)).await?;
            }
        }
    }
    let body = js_sys::Uint8Array::from(bytes);
    let response = Response::new_with_opt_buffer_source(Some(&body))?;
    JsFuture::from(cache.put_with_str(key, &response)).await?;
    Ok(())
}

/// Asks the browser for a WebGPU adapter and describes it, or says why there is none.
async fn probe_adapter(scope: &DedicatedWorkerGlobalScope) -> Result<Adapter, String> {
    let get = |target: &JsValue, key: &str| {
        js_sys::Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    };
    let gpu = get(&scope.navigator(), "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser does not offer WebGPU (navigator.gpu is missing)".into());
    }
    let request = get(&gpu, "requestAdapter")
        .dyn_into::<js_sys::Function>()
        .map_err(|_| "navigator.gpu.requestAdapter is not a function".to_string())?;
    let promise = request
        .call0(&gpu)
        .map_err(|e| describe_js(&e))?
        .dyn_into::<js_sys::Promise>()
        .map_err(|_| "requestAdapter() did not return a promise".to_string())?;
    let adapter = JsFuture::from(promise).await.map_err(|e| describe_js(&e))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("the browser found no WebGPU adapter".into());
    }
    let info = get(&adapter, "info");
    let field = |key: &str| get(&info, key).as_string().unwrap_or_default();
    let description = field("description");
    let label = [field("vendor"), field("architecture")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let name = match (description.is_empty(), label.is_empty()) {
        (false, false) => format!("{description} ({label})"),
        (false, true) => description,
        (true, false) => label,
        (true, true) => "WebGPU adapter".into(),
    };
    // Newer browsers say it in `info`, older ones on the adapter itself.
    let software = get(&info, "isFallbackAdapter").as_bool().unwrap_or(false)
        || get(&adapter, "isFallbackAdapter")
            .as_bool()
            .unwrap_or(false);
    Ok(Adapter { name, software })
}

/// 64-bit FNV-1a: a stable fingerprint of the manifest's text.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
