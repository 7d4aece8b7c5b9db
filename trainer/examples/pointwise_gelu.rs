//! Times a ConvNeXt block's expanding pointwise layer and the GELU after it at
//! inference, apart (`pointwise_forward`, then `gelu_forward_in_place` on its output,
//! as the network ran them before) and as one kernel (`pointwise_gelu_forward`), on
//! all threads, batch 1, the weight stored output-major as the blocks store theirs:
//! `cargo run --release -p trainer --example pointwise_gelu [SECONDS]`.
//!
//! Prints milliseconds per call for each, the best of three rounds of SECONDS (default
//! 0.4) each, the two ways alternating round by round, and the ratio.

use model_core::kernels::gelu::gelu_forward_in_place;
use model_core::kernels::pointwise::{
    pointwise_forward, pointwise_gelu_forward, PointwiseShape, WeightView,
};
use std::time::Instant;

/// The best of three rounds of `seconds` of repeated calls, in milliseconds per call.
fn best_ms(seconds: f64, round: usize, ways: [&dyn Fn() -> Vec<f32>; 2]) -> [f64; 2] {
    let mut best = [f64::INFINITY; 2];
    for r in 0..3 {
        for step in 0..2 {
            // Alternate which way runs first, so that neither always follows the other.
            let which = (step + r + round) % 2;
            std::hint::black_box(ways[which]());
            let start = Instant::now();
            let mut calls = 0u32;
            while start.elapsed().as_secs_f64() < seconds {
                std::hint::black_box(ways[which]());
                calls += 1;
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / calls as f64;
            best[which] = best[which].min(ms);
        }
    }
    best
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.4);
    // (inputs, outputs, positions): the expanding layer of every stage of ConvNeXt-Tiny
    // at 224 px and of ConvNeXt-Base at 384 px.
    let shapes = [
        (96, 384, 3136),
        (192, 768, 784),
        (384, 1536, 196),
        (768, 3072, 49),
        (128, 512, 9216),
        (256, 1024, 2304),
        (512, 2048, 576),
        (1024, 4096, 144),
    ];
    println!(
        "threads: {}; ms per call, best of 3 x {seconds} s",
        rayon::current_num_threads()
    );
    println!("| inputs | outputs | positions | apart | one kernel | speed-up |");
    println!("| --- | --- | --- | ---: | ---: | ---: |");
    for (round, (inputs, outputs, positions)) in shapes.into_iter().enumerate() {
        let shape = PointwiseShape {
            batch: 1,
            inputs,
            outputs,
            positions,
        };
        let x: Vec<f32> = (0..inputs * positions)
            .map(|i| (i % 7) as f32 * 0.1 - 0.3)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|o| (o % 3) as f32 * 0.2 - 0.2).collect();
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|i| (i % 5) as f32 * 0.01 - 0.02)
            .collect();
        let view = WeightView {
            data: &weight,
            along_in: 1,
            along_out: inputs,
        };
        let apart = || {
            let mut y = pointwise_forward(&x, view, &bias, shape);
            gelu_forward_in_place(&mut y);
            y
        };
        let fused = || pointwise_gelu_forward(&x, view, &bias, shape);
        let largest = apart()
            .iter()
            .zip(fused())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(largest < 1e-4, "the two ways differ by {largest}");
        let [a, f] = best_ms(seconds, round, [&apart, &fused]);
        println!(
            "| {inputs} | {outputs} | {positions} | {a:.3} | {f:.3} | {:.2}x |",
            a / f
        );
    }
}
