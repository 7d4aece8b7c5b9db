use clap::Parser;

fn main() {
    // `--time-budget` counts from here.
    trainer::train::budget::process_clock();
    tune_allocator();
    quiet_vulkan_device_select();
    let cli = trainer::cli::Cli::parse();
    if let Err(err) = trainer::cli::run(cli) {
        // One clear line (with its causes) on stderr, and a non-zero exit.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Keeps freed feature maps in the process for the next step instead of handing them
/// back to the kernel. By default glibc maps every block over a few hundred KiB
/// separately and unmaps it on free, so each step pays page faults and zeroing for
/// every tensor again; that was about a tenth of a CPU training step in `perf`, and
/// these two settings make `trainer bench --train` on the default job's network about
/// 15 % faster (BENCHMARKS.md). Blocks over 32 MiB are still mapped separately, and
/// free memory above 1 GiB at the top of the heap is still returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets glibc allocator parameters; it runs before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// On a machine without a display, Mesa's Vulkan device-select layer (installed with
/// lavapipe) still asks Wayland for the default GPU while wgpu lists adapters, and
/// libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set" twice: alarming
/// noise before every `--device auto` run, though nothing is wrong. With no display
/// there is no default GPU to find, so the layer is switched off through its own
/// documented variable, unless the user has set it either way.
#[cfg(target_os = "linux")]
fn quiet_vulkan_device_select() {
    let headless = ["WAYLAND_DISPLAY", "DISPLAY"]
        .iter()
        .all(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()));
    if headless && std::env::var_os("NODEVICE_SELECT").is_none() {
        // Runs before any other thread exists, so changing the environment is safe.
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

#[cfg(not(target_os = "linux"))]
fn quiet_vulkan_device_select() {}
