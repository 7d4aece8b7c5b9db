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
            Chosen::Cuda(d) => write!(f, "cuda ({d:?})"),
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

#[cfg(feature = "cuda")]
fn cuda_device() -> Option<burn::backend::cuda::CudaDevice> {
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

/// Runs `task` on the chosen device's backend (with autodiff).
pub fn run_on<T: BackendTask>(chosen: &Chosen, task: T) -> T::Output {
    match chosen {
        #[cfg(feature = "cuda")]
        Chosen::Cuda(d) => task.run::<Autodiff<Cuda>>(d.clone(), chosen),
        #[cfg(feature = "wgpu")]
        Chosen::Wgpu(d) => task.run::<Autodiff<Wgpu>>(d.clone(), chosen),
        Chosen::Cpu => task.run::<Autodiff<Cpu>>(Default::default(), chosen),
    }
}
