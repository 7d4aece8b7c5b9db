//! A product photo of one garment: background, placement, drop shadow, lighting, blur,
//! sensor noise; JPEG quality is chosen here too.
//!
//! The two domains differ on purpose (the controlled domain shift that the MMD term of
//! phase one adapts to):
//!
//! | | train | test |
//! | --- | --- | --- |
//! | background | light neutral studio (grey-white, some with a floor line) | wood, pastel walls, dark studio, concrete |
//! | exposure | 0.93..1.07 | 0.80..1.0 |
//! | light falloff across the frame | up to 10% | up to 30% |
//! | colour cast (red vs blue gain) | none | up to 5% |
//! | garment fills | 72..92% of the frame | 62..85% |
//! | blur (share of a 3x3 box blur) | 0..0.5 | 0.2..0.9 |
//! | noise (std. dev., 0..1 scale) | 0.008 | 0.02 |
//! | JPEG quality | 80..95 | 60..85 |

use super::garment::Look;
use super::raster::{box_blur_rgb, lerp, scale, Canvas, Frame, Rgb, P};
use crate::rng::{mix64, Rng};
use image::RgbImage;

/// Supersampling factor per axis: the garment is drawn at 2x and averaged down, which
/// smooths its edges.
pub const SUPERSAMPLE: usize = 2;

/// Which side of the domain shift an image is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Train,
    Test,
}

#[derive(Debug, Clone, Copy)]
enum Background {
    Studio { tint: Rgb, floor: Option<f32> },
    Wood { colour: Rgb, grain: f32 },
    Wall { colour: Rgb },
    Dark { level: f32 },
    Concrete { level: f32, seed: u64 },
}

fn pick_background(domain: Domain, rng: &mut Rng) -> Background {
    match domain {
        Domain::Train => {
            let level = rng.range(0.84, 0.98);
            let warm = rng.symmetric(0.02);
            Background::Studio {
                tint: [level + warm, level, level - warm],
                floor: rng.chance(0.3).then(|| rng.range(0.7, 0.85)),
            }
        }
        Domain::Test => match rng.below(4) {
            0 => Background::Wood {
                colour: [
                    rng.range(0.5, 0.68),
                    rng.range(0.36, 0.46),
                    rng.range(0.22, 0.3),
                ],
                grain: rng.range(0.02, 0.05),
            },
            1 => {
                let walls = [
                    [0.72, 0.82, 0.9],
                    [0.9, 0.76, 0.8],
                    [0.74, 0.88, 0.8],
                    [0.82, 0.78, 0.9],
                ];
                Background::Wall {
                    colour: *rng.pick(&walls),
                }
            }
            2 => Background::Dark {
                level: rng.range(0.12, 0.28),
            },
            _ => Background::Concrete {
                level: rng.range(0.45, 0.62),
                seed: rng.next_u64(),
            },
        },
    }
}

fn background_at(bg: &Background, x: usize, y: usize, w: usize, h: usize) -> Rgb {
    let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
    match *bg {
        Background::Studio { tint, floor } => {
            let mut c = scale(tint, 1.0 - 0.06 * fy);
            if let Some(line) = floor {
                if fy > line {
                    c = scale(c, 0.88);
                }
            }
            c
        }
        Background::Wood { colour, grain } => {
            let wave =
                (fy * 90.0 + 3.0 * (fx * 6.0).sin() + 1.5 * (fx * 17.0 + fy * 5.0).sin()).sin();
            let plank = if ((fx * 4.0).fract()) < 0.01 {
                0.7
            } else {
                1.0
            };
            scale(colour, (1.0 + grain * 3.0 * wave) * plank)
        }
        Background::Wall { colour } => scale(colour, 1.0 - 0.1 * fx),
        Background::Dark { level } => {
            let r = ((fx - 0.5).powi(2) + (fy - 0.45).powi(2)).sqrt();
            [level * (1.3 - r); 3]
        }
        Background::Concrete { level, seed } => {
            // Coarse value noise from hashed 8-pixel blocks, plus fine grain.
            let coarse =
                (mix64(seed ^ (((x / 8) as u64) << 20) ^ (y / 8) as u64) >> 56) as f32 / 255.0;
            let fine = (mix64(seed ^ 0xF ^ ((x as u64) << 24) ^ y as u64) >> 56) as f32 / 255.0;
            [level * (0.9 + 0.12 * coarse + 0.06 * fine); 3]
        }
    }
}

/// Local-unit bounding box of the garment's parts.
fn bounds(look: &Look) -> (P, P) {
    look.parts()
        .iter()
        .fold(([f32::MAX; 2], [f32::MIN; 2]), |(lo, hi), part| {
            let (a, b) = part.shape.bounds();
            (
                [lo[0].min(a[0]), lo[1].min(a[1])],
                [hi[0].max(b[0]), hi[1].max(b[1])],
            )
        })
}

/// Draws `look` as a `size x size` product photo of `domain`. Returns the image and
/// the JPEG quality to save it with.
pub fn render(look: &Look, size: u32, domain: Domain, rng: &mut Rng) -> (RgbImage, u8) {
    let n = size as usize * SUPERSAMPLE;
    let bg = pick_background(domain, rng);
    let mut canvas = Canvas::new(n, n, |x, y| background_at(&bg, x, y, n, n));

    // Placement: fit the garment's box to a share of the frame, turn it a little and
    // move it off centre.
    let (lo, hi) = bounds(look);
    let extent = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let fill = match domain {
        Domain::Train => rng.range(0.72, 0.92),
        Domain::Test => rng.range(0.62, 0.85),
    };
    let angle = rng.symmetric(7.0f32.to_radians());
    let px_per_unit = fill * n as f32 / extent;
    let slack = (1.0 - fill) * n as f32 * 0.4;
    let target = [
        n as f32 / 2.0 + rng.symmetric(slack),
        n as f32 / 2.0 + rng.symmetric(slack),
    ];
    let mid = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let probe = Frame::new([0.0, 0.0], px_per_unit, angle).to_canvas(mid);
    let frame = Frame::new(
        [target[0] - probe[0], target[1] - probe[1]],
        px_per_unit,
        angle,
    );

    for part in look.parts() {
        canvas.fill(&frame, &part.shape, part.id, &*part.paint);
    }
    canvas.seams(0.72);
    let shadow_offset = (n as f32 * 0.015) as isize;
    canvas.shadow(
        shadow_offset,
        shadow_offset,
        (n / 40).max(1),
        if domain == Domain::Train { 0.22 } else { 0.35 },
    );
    let (w, h, mut pixels) = canvas.downsample(SUPERSAMPLE);

    // Lighting: exposure, a linear falloff in a random direction, a colour cast.
    let (gain, falloff, cast) = match domain {
        Domain::Train => (rng.range(0.93, 1.07), rng.range(0.0, 0.1), 0.0),
        Domain::Test => (
            rng.range(0.8, 1.0),
            rng.range(0.1, 0.3),
            rng.symmetric(0.05),
        ),
    };
    let dir = rng.range(0.0, std::f32::consts::TAU);
    let (dx, dy) = (dir.cos(), dir.sin());
    for y in 0..h {
        for x in 0..w {
            let t = dx * (x as f32 / w as f32 - 0.5) + dy * (y as f32 / h as f32 - 0.5);
            let k = gain * (1.0 + falloff * t);
            let p = &mut pixels[y * w + x];
            *p = [p[0] * k * (1.0 + cast), p[1] * k, p[2] * k * (1.0 - cast)];
        }
    }
    // Blur: a blend towards a 3x3 box blur.
    let blur = match domain {
        Domain::Train => rng.range(0.0, 0.5),
        Domain::Test => rng.range(0.2, 0.9),
    };
    if blur > 0.05 {
        let mut blurred = pixels.clone();
        box_blur_rgb(&mut blurred, w, h, 1);
        for (p, b) in pixels.iter_mut().zip(&blurred) {
            *p = lerp(*p, *b, blur);
        }
    }
    let noise = if domain == Domain::Train { 0.008 } else { 0.02 };
    let quality = match domain {
        Domain::Train => 80 + rng.below(16) as u8,
        Domain::Test => 60 + rng.below(26) as u8,
    };
    let mut image = RgbImage::new(w as u32, h as u32);
    for (i, px) in image.pixels_mut().enumerate() {
        let p = pixels[i];
        // Approximately Gaussian: the sum of two uniforms.
        let e = (rng.f32() + rng.f32() - 1.0) * noise * 2.45;
        px.0 = [0, 1, 2].map(|c| ((p[c] + e) * 255.0).round().clamp(0.0, 255.0) as u8);
    }
    (image, quality)
}
