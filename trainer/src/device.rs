//! Choosing where training and inference run: CUDA, then wgpu, then the CPU.

use anyhow::{bail, Result};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::fmt;

/// The CPU backend: Flex (pure Rust, SIMD, multithreaded), chosen over NdArray on
/// measurements (BENCHMARKS.md: about 5x the training throughput of NdArray on the
/// default job's network).
pub type Cpu = Flex;
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
/// CUDA without Burn's kernel fusion: every tensor op launches its own stock kernel.
/// Chosen with `TRAINER_CUDA_FUSION=0`; fusion compiles (and autotunes) a kernel for
/// every distinct chain of ops, which a short job pays for at start-up.
#[cfg(feature = "cuda")]
pub type CudaUnfused = burn_cubecl::CubeBackend<burn::cubecl::cuda::CudaRuntime, f32, i32, u8>;
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// What the user asked for with `--device`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if a driver and GPU answer, else a hardware wgpu adapter, else the CPU.
    Auto,
    Cuda,
    Wgpu,
    Cpu,
}

/// A device that answered.
#[derive(Debug, Clone)]
pub enum Chosen {
    #[cfg(feature = "cuda")]
    Cuda(burn::backend::cuda::CudaDevice),
    #[cfg(feature = "wgpu")]
    Wgpu(burn::backend::wgpu::WgpuDevice),
    Cpu,
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "cuda")]
            Chosen::Cuda(d) if cuda_fusion() => write!(f, "cuda ({d:?})"),
            #[cfg(feature = "cuda")]
            Chosen::Cuda(d) => write!(f, "cuda ({d:?}, without fusion)"),
            #[cfg(feature = "wgpu")]
            Chosen::Wgpu(d) => write!(f, "wgpu ({d:?})"),
            Chosen::Cpu => write!(f, "cpu (flex, {} threads)", rayon_threads()),
        }
    }
}

impl Chosen {
    /// Short name: `cuda`, `wgpu` or `cpu`.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "cuda")]
            Chosen::Cuda(_) => "cuda",
            #[cfg(feature = "wgpu")]
            Chosen::Wgpu(_) => "wgpu",
            Chosen::Cpu => "cpu",
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `probe` with panics silenced; true when it returned without panicking. GPU
/// backends panic when no driver or adapter is present, which here just means "not
/// this one".
#[allow(dead_code)]
fn answers(probe: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(probe).is_ok();
    std::panic::set_hook(hook);
    ok
}

/// Whether CUDA runs with kernel fusion: yes unless `TRAINER_CUDA_FUSION` is `0`,
/// `off` or `false`.
#[cfg(feature = "cuda")]
pub fn cuda_fusion() -> bool {
    !matches!(
        std::env::var("TRAINER_CUDA_FUSION").as_deref(),
        Ok("0" | "off" | "false")
    )
}

/// Where compiled GPU kernels are kept between runs: `$XDG_CACHE_HOME/garment-tagger/
/// kernels`, else `~/.cache/garment-tagger/kernels`.
#[cfg(feature = "cuda")]
fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("garment-tagger").join("kernels"))
}

/// CubeCL (the compiler under Burn's GPU backends) compiles every kernel at run time
/// and, unless told otherwise, forgets them when the process ends, so each run of the
/// trainer would pay the compilation again. This keeps compiled CUDA kernels on disk
/// (kernel_cache_dir) unless a `cubecl.toml` or `burn.toml` already names a cache.
/// CubeCL's environment variables (CUBECL_DEBUG_LOG, CUBECL_AUTOTUNE_LEVEL) still apply.
#[cfg(feature = "cuda")]
fn keep_compiled_kernels() {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none() {
            // CubeCL creates the folder when it first writes, and runs on without the
            // cache (recompiling) when it cannot.
            config.compilation.cache = kernel_cache_dir().map(CacheConfig::File);
        }
        // `set` refuses (panics) once the configuration has been read; then CubeCL
        // simply keeps what it has.
        answers(move || CubeClRuntimeConfig::set(config));
    });
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Option<burn::backend::cuda::CudaDevice> {
    keep_compiled_kernels();
    let device = burn::backend::cuda::CudaDevice::default();
    let probe = device.clone();
    answers(move || {
        let t = Tensor::<Cuda, 1>::ones([4], &probe);
        let _ = t.sum().into_data();
    })
    .then_some(device)
}

/// A wgpu device, if an adapter answers; `hardware_only` refuses CPU adapters such as
/// lavapipe or SwiftShader, which are slower than the CPU backend.
#[cfg(feature = "wgpu")]
fn wgpu_device(hardware_only: bool) -> Option<burn::backend::wgpu::WgpuDevice> {
    use burn::backend::wgpu::WgpuDevice;
    let device = WgpuDevice::DefaultDevice;
    if hardware_only && !has_hardware_adapter() {
        return None;
    }
    let probe = device.clone();
    answers(move || {
        let t = Tensor::<Wgpu, 1>::ones([4], &probe);
        let _ = t.sum().into_data();
    })
    .then_some(device)
}

#[cfg(feature = "wgpu")]
fn has_hardware_adapter() -> bool {
    let instance = wgpu::Instance::default();
    // GL is left out: probing it through EGL prints noise on headless machines.
    let adapters =
        pollster::block_on(instance.enumerate_adapters(
            wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
        ));
    adapters
        .iter()
        .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// Resolves `--device`, printing nothing; a named device that does not answer is an error.
pub fn choose(choice: DeviceChoice) -> Result<Chosen> {
    match choice {
        DeviceChoice::Cpu => Ok(Chosen::Cpu),
        DeviceChoice::Cuda => {
            #[cfg(feature = "cuda")]
            if let Some(d) = cuda_device() {
                return Ok(Chosen::Cuda(d));
            }
            bail!("--device cuda: no CUDA device answered (is the NVIDIA driver installed? this build has CUDA support: {})", cfg!(feature = "cuda"))
        }
        DeviceChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            if let Some(d) = wgpu_device(false) {
                return Ok(Chosen::Wgpu(d));
            }
            bail!("--device wgpu: no wgpu adapter answered (on a machine without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers)")
        }
        DeviceChoice::Auto => {
            #[cfg(feature = "cuda")]
            if let Some(d) = cuda_device() {
                return Ok(Chosen::Cuda(d));
            }
            #[cfg(feature = "wgpu")]
            if let Some(d) = wgpu_device(true) {
                return Ok(Chosen::Wgpu(d));
            }
            Ok(Chosen::Cpu)
        }
    }
}

/// Work that runs on whichever backend was chosen.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device, chosen: &Chosen) -> Self::Output;
}

/// Gives the GPU backend `I` model-core's ways around two slow stock paths
/// (BENCHMARKS.md, "CUDA"), each unless its variable asks for Burn's own, to compare:
/// - training: the backward pass for grouped convolutions (the stock one runs group by
///   group), `TRAINER_GROUPED_CONV=stock` for the stock one;
/// - training and inference: the stem and downsampling convolutions (kernel = stride)
///   as matrix products, `TRAINER_PATCH_CONV=stock` for the stock convolutions.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn gpu_kernels<I: burn::tensor::backend::Backend>() {
    if std::env::var("TRAINER_GROUPED_CONV").as_deref() != Ok("stock") {
        model_core::kernels::conv::gpu::use_for::<I>();
    }
    if std::env::var("TRAINER_PATCH_CONV").as_deref() != Ok("stock") {
        model_core::convnext::norm::patch_conv_as_matmul_on::<I>();
        model_core::convnext::norm::patch_conv_as_matmul_on::<Autodiff<I>>();
    }
}

/// Runs `task` on the chosen device's backend (with autodiff).
pub fn run_on<T: BackendTask>(chosen: &Chosen, task: T) -> T::Output {
    match chosen {
        #[cfg(feature = "cuda")]
        Chosen::Cuda(d) if cuda_fusion() => {
            gpu_kernels::<Cuda>();
            task.run::<Autodiff<Cuda>>(d.clone(), chosen)
        }
        #[cfg(feature = "cuda")]
        Chosen::Cuda(d) => {
            gpu_kernels::<CudaUnfused>();
            task.run::<Autodiff<CudaUnfused>>(d.clone(), chosen)
        }
        #[cfg(feature = "wgpu")]
        Chosen::Wgpu(d) => {
            gpu_kernels::<Wgpu>();
            task.run::<Autodiff<Wgpu>>(d.clone(), chosen)
        }
        Chosen::Cpu => task.run::<Autodiff<Cpu>>(Default::default(), chosen),
    }
}
