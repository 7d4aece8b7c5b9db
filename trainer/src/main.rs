use clap::Parser;

fn main() {
    tune_allocator();
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
