//! Times model-core's depthwise 7x7 kernel (the inference forward pass, on all
//! threads) on the plane sizes of ConvNeXt's stages, with its two plane loops: the
//! tap-by-tap passes and the register-blocked 7x7 path this CPU takes when it has
//! AVX-512F or AVX2 with FMA:
//! `cargo run --release -p trainer --example depthwise_planes [SECONDS]`.
//!
//! Prints GFLOP/s (two per multiply-add of the 49 taps, border taps included) per
//! shape and loop, each the best of three rounds of SECONDS (default 0.4) of repeated
//! calls on one `[1, channels, side, side]` map.

use model_core::kernels::depthwise::{depthwise_same_on, DepthwiseShape, Path};
use std::time::Instant;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.4);
    // (channels, side): ConvNeXt-Tiny's four stages at 224 px, ConvNeXt-Base's at
    // 384 px.
    let shapes = [
        (96, 56),
        (192, 28),
        (384, 14),
        (768, 7),
        (128, 96),
        (256, 48),
        (512, 24),
        (1024, 12),
    ];
    println!(
        "threads: {}; GFLOP/s, best of 3 x {seconds} s",
        rayon::current_num_threads()
    );
    println!("| channels | side | tap by tap | blocked | speed-up |");
    println!("| --- | --- | --- | --- | --- |");
    for (channels, side) in shapes {
        let shape = DepthwiseShape {
            batch: 1,
            channels,
            height: side,
            width: side,
            kernel: 7,
        };
        let x: Vec<f32> = (0..channels * side * side)
            .map(|i| (i % 7) as f32 * 0.1 - 0.3)
            .collect();
        let weight: Vec<f32> = (0..channels * 49).map(|i| (i % 5) as f32 * 0.01).collect();
        let bias = vec![0.5f32; channels];
        let flop = 2.0 * 49.0 * x.len() as f64;
        let rates = [Path::ByTaps, Path::Fastest].map(|path| {
            let mut best = 0.0f64;
            for _ in 0..3 {
                let call = || depthwise_same_on(&x, &weight, Some(&bias), false, shape, path);
                std::hint::black_box(call());
                let start = Instant::now();
                let mut calls = 0u32;
                while start.elapsed().as_secs_f64() < seconds {
                    std::hint::black_box(call());
                    calls += 1;
                }
                best = best.max(flop * calls as f64 / start.elapsed().as_secs_f64() / 1e9);
            }
            best
        });
        println!(
            "| {channels} | {side} | {:.1} | {:.1} | {:.2}x |",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }
}
