//! Times model-core's pointwise kernel (the inference forward pass, on all threads) on
//! the matrix shapes of ConvNeXt's pointwise layers, with the weight stored
//! input-major (`[in, out]`, Burn `Linear`'s layout) and output-major (`[out, in]`, as
//! the network's blocks store theirs on the CPU):
//! `cargo run --release -p trainer --example pointwise_layouts [SECONDS]`.
//!
//! Prints GFLOP/s per shape and layout, each the best of three rounds of SECONDS
//! (default 0.4) of repeated calls on one `[inputs, positions]` map (batch 1).

use model_core::kernels::pointwise::{pointwise_forward, PointwiseShape, WeightView};
use std::time::Instant;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.4);
    // (inputs, outputs, positions): both layers of a block, stage by stage, for
    // ConvNeXt-Tiny at 224 px and ConvNeXt-Base's last stage at 384 px.
    let shapes = [
        (96, 384, 3136),
        (384, 96, 3136),
        (192, 768, 784),
        (768, 192, 784),
        (384, 1536, 196),
        (1536, 384, 196),
        (768, 3072, 49),
        (3072, 768, 49),
        (1024, 4096, 144),
        (4096, 1024, 144),
    ];
    println!(
        "threads: {}; GFLOP/s, best of 3 x {seconds} s",
        rayon::current_num_threads()
    );
    println!("| inputs | outputs | positions | input-major | output-major |");
    println!("| --- | --- | --- | --- | --- |");
    for (inputs, outputs, positions) in shapes {
        let shape = PointwiseShape {
            batch: 1,
            inputs,
            outputs,
            positions,
        };
        let x: Vec<f32> = (0..inputs * positions)
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        let bias = vec![0.5f32; outputs];
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|i| (i % 5) as f32 * 0.01)
            .collect();
        let layouts = [
            WeightView {
                data: &weight,
                along_in: outputs,
                along_out: 1,
            },
            WeightView {
                data: &weight,
                along_in: 1,
                along_out: inputs,
            },
        ];
        let flop = 2.0 * (inputs * outputs * positions) as f64;
        let rates = layouts.map(|view| {
            let mut best = 0.0f64;
            for _ in 0..3 {
                std::hint::black_box(pointwise_forward(&x, view, &bias, shape));
                let start = Instant::now();
                let mut calls = 0u32;
                while start.elapsed().as_secs_f64() < seconds {
                    std::hint::black_box(pointwise_forward(&x, view, &bias, shape));
                    calls += 1;
                }
                best = best.max(flop * calls as f64 / start.elapsed().as_secs_f64() / 1e9);
            }
            best
        });
        println!(
            "| {inputs} | {outputs} | {positions} | {:.0} | {:.0} |",
            rates[0], rates[1]
        );
    }
}
