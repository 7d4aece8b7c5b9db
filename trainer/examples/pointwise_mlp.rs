//! Times a ConvNeXt block's MLP at inference (expanding pointwise layer, GELU,
//! contracting pointwise layer) as two kernels (`pointwise_gelu_forward`, then
//! `pointwise_forward` on its output, as the blocks run it wherever the tiled kernel
//! is not used) and as one tiled kernel (`pointwise_mlp_forward`) at several tile
//! widths, on all threads, weights stored output-major as the blocks store theirs:
//! `cargo run --release -p trainer --example pointwise_mlp [SECONDS] [TILES]`.
//!
//! TILES is a comma-separated list of tile widths in positions (default 64,128,256).
//! Prints milliseconds per call, the best of three rounds of SECONDS (default 0.3) for
//! each way, the ways taking turns within a round.

use model_core::kernels::pointwise::{
    pointwise_forward, pointwise_gelu_forward, pointwise_mlp_forward, MlpShape, PointwiseShape,
    WeightView,
};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let tiles: Vec<usize> = args
        .next()
        .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 128, 256]);
    // (batch, channels, positions): every stage of ConvNeXt-Base at 384 and 512 px at
    // batch 1, and of ConvNeXt-Tiny and -Atto at 224 px at batches 1 and 8.
    let shapes = [
        (1, 128, 128 * 128),
        (1, 256, 64 * 64),
        (1, 512, 32 * 32),
        (1, 1024, 16 * 16),
        (1, 128, 96 * 96),
        (1, 256, 48 * 48),
        (1, 512, 24 * 24),
        (1, 96, 56 * 56),
        (1, 192, 28 * 28),
        (8, 96, 56 * 56),
        (8, 192, 28 * 28),
        (8, 384, 14 * 14),
        (8, 768, 7 * 7),
        (1, 40, 56 * 56),
        (1, 80, 28 * 28),
        (1, 160, 14 * 14),
        (8, 40, 56 * 56),
        (8, 80, 28 * 28),
    ];
    println!(
        "threads: {}; ms per call, best of 3 x {seconds} s",
        rayon::current_num_threads()
    );
    let header: Vec<String> = tiles.iter().map(|t| format!("tile {t}")).collect();
    println!(
        "| batch | channels | positions | apart | {} |",
        header.join(" | ")
    );
    println!(
        "| --- | --- | --- | ---: |{}",
        " ---: |".repeat(tiles.len())
    );
    for (batch, channels, positions) in shapes {
        let hidden = 4 * channels;
        let x: Vec<f32> = (0..batch * channels * positions)
            .map(|i| (i % 7) as f32 * 0.1 - 0.3)
            .collect();
        let b1: Vec<f32> = (0..hidden).map(|o| (o % 3) as f32 * 0.2 - 0.2).collect();
        let b2: Vec<f32> = (0..channels).map(|o| (o % 5) as f32 * 0.1 - 0.2).collect();
        let w1: Vec<f32> = (0..channels * hidden)
            .map(|i| (i % 5) as f32 * 0.01 - 0.02)
            .collect();
        let w2: Vec<f32> = (0..channels * hidden)
            .map(|i| (i % 9) as f32 * 0.01 - 0.04)
            .collect();
        // Output-major: output `o`'s weights together.
        let v1 = WeightView {
            data: &w1,
            along_in: 1,
            along_out: channels,
        };
        let v2 = WeightView {
            data: &w2,
            along_in: 1,
            along_out: hidden,
        };
        let apart = || {
            let h = pointwise_gelu_forward(
                &x,
                v1,
                &b1,
                PointwiseShape {
                    batch,
                    inputs: channels,
                    outputs: hidden,
                    positions,
                },
            );
            pointwise_forward(
                &h,
                v2,
                &b2,
                PointwiseShape {
                    batch,
                    inputs: hidden,
                    outputs: channels,
                    positions,
                },
            )
        };
        let shape = MlpShape {
            batch,
            channels,
            hidden,
            positions,
        };
        let fused = |tile: usize| pointwise_mlp_forward(&x, v1, &b1, v2, &b2, shape, tile);
        let reference = apart();
        for &tile in &tiles {
            let largest = reference
                .iter()
                .zip(fused(tile))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(largest < 1e-3, "tile {tile} differs by {largest}");
        }
        let mut ways: Vec<Box<dyn Fn() -> Vec<f32>>> = vec![Box::new(apart)];
        for &tile in &tiles {
            ways.push(Box::new(move || fused(tile)));
        }
        let mut best = vec![f64::INFINITY; ways.len()];
        for _ in 0..3 {
            for (which, way) in ways.iter().enumerate() {
                std::hint::black_box(way());
                let start = Instant::now();
                let mut calls = 0u32;
                while start.elapsed().as_secs_f64() < seconds {
                    std::hint::black_box(way());
                    calls += 1;
                }
                best[which] = best[which].min(start.elapsed().as_secs_f64() * 1e3 / calls as f64);
            }
        }
        let cells: Vec<String> = best[1..]
            .iter()
            .map(|f| format!("{f:.2} ({:.2}x)", best[0] / f))
            .collect();
        println!(
            "| {batch} | {channels} | {positions} | {:.2} | {} |",
            best[0],
            cells.join(" | ")
        );
    }
}
