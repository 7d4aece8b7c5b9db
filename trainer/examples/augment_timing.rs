//! Times the augmentation steps one by one on a single thread at a given size:
//! `cargo run --release -p trainer --example augment_timing -- 512`.

use std::time::Instant;
use trainer::augment::{apply_params, AugmentParams};

fn main() {
    let size: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let cases = [
        ("identity", AugmentParams::identity()),
        (
            "flip only",
            AugmentParams {
                flip: true,
                ..AugmentParams::identity()
            },
        ),
        (
            "crop + rotate",
            AugmentParams {
                crop: [0.1, 0.1, 0.8, 0.8],
                rotation: 0.1,
                ..AugmentParams::identity()
            },
        ),
        (
            "brightness + contrast",
            AugmentParams {
                brightness: 1.1,
                contrast: 0.9,
                ..AugmentParams::identity()
            },
        ),
        (
            "all standard steps",
            AugmentParams {
                flip: true,
                crop: [0.1, 0.1, 0.8, 0.8],
                rotation: 0.1,
                brightness: 1.1,
                contrast: 0.9,
                ..AugmentParams::identity()
            },
        ),
        (
            "light fall-off",
            AugmentParams {
                falloff: (0.3, 1.0),
                ..AugmentParams::identity()
            },
        ),
        (
            "blur",
            AugmentParams {
                blur: 0.9,
                ..AugmentParams::identity()
            },
        ),
        (
            "all photo steps",
            AugmentParams {
                flip: true,
                crop: [-0.1, -0.1, 1.2, 1.2],
                rotation: 0.1,
                brightness: 1.1,
                contrast: 0.9,
                falloff: (0.3, 1.0),
                blur: 0.9,
            },
        ),
    ];
    for (name, params) in cases {
        let n = 40;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(apply_params(&img, &params));
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!(
            "{name:24} {ms:7.2} ms/image  ({:.0} images/s on one thread)",
            1000.0 / ms
        );
    }
}
