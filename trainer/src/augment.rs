//! Training-time augmentation (SPEC.md, Training 6): each training image is augmented
//! with probability 0.5, drawn anew every epoch from `(seed, epoch, index)`; when it is,
//! it gets a horizontal flip (half the time), a random resized crop, a small rotation
//! and mild brightness and contrast changes. Settings may add what separates casual
//! photos from studio ones: zooming out (a crop box larger than the frame), light that
//! falls off across the picture, and softness (a blend with a 3x3 box blur).
//!
//! Colour is a label, so nothing here may shift hue or saturation. The geometric steps
//! only move and blend pixels of the same image (bilinear, with edge pixels repeated
//! outside the frame). The photometric step changes each pixel's luma and then scales
//! its R, G and B by one common factor, which keeps the channel ratios, so hue and
//! HSV saturation are unchanged; where a channel would clip at 255 the factor is
//! lowered instead of clipping one channel alone (which would shift the hue).

use crate::rng::Rng;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Augmentation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Chance that an image is augmented at all in a given epoch.
    pub probability: f32,
    /// Chance of a horizontal flip, given that the image is augmented.
    pub flip_probability: f32,
    /// Range of the crop's share of the image area. The lower end is kept high so that
    /// hems, sleeves and borders (all labels) stay mostly in view.
    pub crop_area: [f32; 2],
    /// Range of the crop's aspect ratio (width / height), drawn log-uniformly.
    pub crop_aspect: [f32; 2],
    /// Largest rotation either way, in degrees.
    pub max_rotation_deg: f32,
    /// Brightness factor range is `1 ± brightness`.
    pub brightness: f32,
    /// Contrast factor range is `1 ± contrast`.
    pub contrast: f32,
    /// Largest share of the brightness lost at the far side of a linear fall-off in a
    /// random direction (0 = even light). Runs saved before this setting: 0.
    #[serde(default)]
    pub light_falloff: f32,
    /// Largest blend weight of a 3x3 box blur (0 = sharp). Runs saved before: 0.
    #[serde(default)]
    pub blur: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            probability: 0.5,
            flip_probability: 0.5,
            crop_area: [0.75, 1.0],
            crop_aspect: [3.0 / 4.0, 4.0 / 3.0],
            max_rotation_deg: 10.0,
            brightness: 0.15,
            contrast: 0.15,
            light_falloff: 0.0,
            blur: 0.0,
        }
    }
}

/// The augmentation settings `trainer train --augment` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AugmentPreset {
    /// Flip, crop (zoom in), small rotation, brightness and contrast.
    #[default]
    Standard,
    /// Standard plus zoom-out, light fall-off and blur ([`AugmentConfig::photo_conditions`]).
    Photo,
    /// No augmentation: every image as it is on disk.
    None,
}

impl AugmentPreset {
    pub fn config(self) -> AugmentConfig {
        match self {
            AugmentPreset::Standard => AugmentConfig::default(),
            AugmentPreset::Photo => AugmentConfig::photo_conditions(),
            AugmentPreset::None => AugmentConfig {
                probability: 0.0,
                ..AugmentConfig::default()
            },
        }
    }
}

impl AugmentConfig {
    /// The default plus the photo-condition steps, for training on studio-like images
    /// that will meet casual ones: crops from 75% of the area (zoom in) to 140% (zoom
    /// out, the garment smaller in the frame), light falling off by up to 30% across the
    /// picture, blur blends up to 0.9.
    pub fn photo_conditions() -> Self {
        Self {
            crop_area: [0.75, 1.4],
            light_falloff: 0.3,
            blur: 0.9,
            ..Self::default()
        }
    }
}

/// One drawn augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    pub flip: bool,
    /// Crop box as fractions of the image: `[x0, y0, width, height]`.
    pub crop: [f32; 4],
    /// Rotation in radians, about the crop's centre.
    pub rotation: f32,
    /// Brightness factor (1 = unchanged).
    pub brightness: f32,
    /// Contrast factor around the image's mean luma (1 = unchanged).
    pub contrast: f32,
    /// Light fall-off: `(strength, direction in radians)`; the brightness factor drops
    /// linearly by up to `strength` from the lit side of the image to the far side.
    pub falloff: (f32, f32),
    /// Blend weight of the 3x3 box blur (0 = none).
    pub blur: f32,
}

impl AugmentParams {
    /// The augmentation that changes nothing.
    pub fn identity() -> Self {
        Self {
            flip: false,
            crop: [0.0, 0.0, 1.0, 1.0],
            rotation: 0.0,
            brightness: 1.0,
            contrast: 1.0,
            falloff: (0.0, 0.0),
            blur: 0.0,
        }
    }
}

/// Seed-stream tag that keeps augmentation draws apart from other uses of the seed.
const AUGMENT_STREAM: u64 = 0xA06;

impl AugmentConfig {
    /// The augmentation of image `index` in `epoch`, or `None` when it is left as it is.
    pub fn draw(&self, seed: u64, epoch: u64, index: u64) -> Option<AugmentParams> {
        let mut rng = Rng::derived(seed, &[AUGMENT_STREAM, epoch, index]);
        if !rng.chance(self.probability) {
            return None;
        }
        let flip = rng.chance(self.flip_probability);
        let area = rng.range(self.crop_area[0], self.crop_area[1]);
        let log_aspect = rng.range(self.crop_aspect[0].ln(), self.crop_aspect[1].ln());
        let aspect = log_aspect.exp();
        // A box within the frame when the area is below 1; above 1 it zooms out: the
        // box is larger than the frame and contains it (the edges repeat outside).
        let (w, h) = if area <= 1.0 {
            (
                (area * aspect).sqrt().min(1.0),
                (area / aspect).sqrt().min(1.0),
            )
        } else {
            (
                (area * aspect).sqrt().max(1.0),
                (area / aspect).sqrt().max(1.0),
            )
        };
        let x0 = span(&mut rng, 1.0 - w);
        let y0 = span(&mut rng, 1.0 - h);
        let rotation = rng.symmetric(self.max_rotation_deg.to_radians());
        let brightness = 1.0 + rng.symmetric(self.brightness);
        let contrast = 1.0 + rng.symmetric(self.contrast);
        // Draws for the newer steps come last, so that settings without them draw the
        // same crops and colours as before they existed.
        let falloff = if self.light_falloff > 0.0 {
            (
                rng.range(0.0, self.light_falloff),
                rng.range(0.0, std::f32::consts::TAU),
            )
        } else {
            (0.0, 0.0)
        };
        let blur = if self.blur > 0.0 {
            rng.range(0.0, self.blur)
        } else {
            0.0
        };
        Some(AugmentParams {
            flip,
            crop: [x0, y0, w, h],
            rotation,
            brightness,
            contrast,
            falloff,
            blur,
        })
    }

    /// Image `index` as epoch `epoch` sees it: augmented, or borrowed unchanged.
    pub fn apply<'a>(
        &self,
        image: &'a RgbImage,
        seed: u64,
        epoch: u64,
        index: u64,
    ) -> Cow<'a, RgbImage> {
        match self.draw(seed, epoch, index) {
            Some(params) => Cow::Owned(apply_params(image, &params)),
            None => Cow::Borrowed(image),
        }
    }
}

/// A uniform offset between 0 and `room` (which is negative when the box is larger
/// than the frame).
fn span(rng: &mut Rng, room: f32) -> f32 {
    if room >= 0.0 {
        rng.range(0.0, room + f32::EPSILON)
    } else {
        rng.range(room, f32::EPSILON)
    }
}

/// Applies one augmentation; the output has the input's size.
pub fn apply_params(image: &RgbImage, p: &AugmentParams) -> RgbImage {
    let geometric = warp(image, p);
    let soft = soften(geometric, p.blur);
    photometric(soft, p.brightness, p.contrast, p.falloff)
}

/// Blends each pixel with the mean of its 3x3 neighbourhood (edges repeated) by
/// `weight`. Every output channel mixes only the same channel of nearby pixels of the
/// garment, so a flat colour keeps its hue.
fn soften(image: RgbImage, weight: f32) -> RgbImage {
    if weight <= 0.0 {
        return image;
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let src = image.as_raw();
    let mut out = image.clone();
    let buf: &mut [u8] = &mut out;
    for y in 0..h {
        let rows = [y.saturating_sub(1), y, (y + 1).min(h - 1)];
        for x in 0..w {
            let cols = [x.saturating_sub(1), x, (x + 1).min(w - 1)];
            for c in 0..3 {
                let mut sum = 0u32;
                for &ry in &rows {
                    for &cx in &cols {
                        sum += u32::from(src[(ry * w + cx) * 3 + c]);
                    }
                }
                let at = (y * w + x) * 3 + c;
                let own = f32::from(src[at]);
                let mean = sum as f32 / 9.0;
                buf[at] = (own + (mean - own) * weight + 0.5) as u8;
            }
        }
    }
    out
}

/// Flip, crop and rotation in one inverse mapping with bilinear sampling.
///
/// The source point of output pixel `(ox, oy)` is an affine function of it, so each row
/// starts from its own base point and steps by a constant per pixel.
fn warp(image: &RgbImage, p: &AugmentParams) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    if !p.flip && p.crop == [0.0, 0.0, 1.0, 1.0] && p.rotation == 0.0 {
        return image.clone();
    }
    let (wf, hf) = (w as f32, h as f32);
    let [cx0, cy0, cw, ch] = p.crop;
    let centre = ((cx0 + cw / 2.0) * wf, (cy0 + ch / 2.0) * hf);
    let (sin, cos) = p.rotation.sin_cos();
    // Position in the crop relative to its centre (source pixels), before turning:
    // qx = qx0 + ox * dqx, qy = (cy0 + v * ch) * hf - centre.1.
    let (qx0, dqx) = if p.flip {
        ((cx0 + (1.0 - 0.5 / wf) * cw) * wf - centre.0, -cw)
    } else {
        ((cx0 + (0.5 / wf) * cw) * wf - centre.0, cw)
    };
    let (step_x, step_y) = (cos * dqx, sin * dqx);
    let src = image.as_raw();
    let stride = w as usize * 3;
    let (max_x, max_y) = ((w - 1) as f32, (h - 1) as f32);
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for oy in 0..h as usize {
        let v = (oy as f32 + 0.5) / hf;
        let qy = (cy0 + v * ch) * hf - centre.1;
        // Pixel centres are at integer + 0.5, hence the - 0.5.
        let mut sx = centre.0 + cos * qx0 - sin * qy - 0.5;
        let mut sy = centre.1 + sin * qx0 + cos * qy - 0.5;
        let row = &mut buf[oy * stride..(oy + 1) * stride];
        for px in row.chunks_exact_mut(3) {
            // Outside the frame the edge pixels repeat.
            let (x, y) = (sx.clamp(0.0, max_x), sy.clamp(0.0, max_y));
            let (x0, y0) = (x as usize, y as usize);
            let (fx, fy) = (x - x0 as f32, y - y0 as f32);
            let x1 = if x0 + 1 < w as usize { x0 + 1 } else { x0 };
            let y1 = if y0 + 1 < h as usize { y0 + 1 } else { y0 };
            let a = texel(src, y0 * stride + x0 * 3);
            let b = texel(src, y0 * stride + x1 * 3);
            let c = texel(src, y1 * stride + x0 * 3);
            let d = texel(src, y1 * stride + x1 * 3);
            for k in 0..3 {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = c[k] + (d[k] - c[k]) * fx;
                // Non-negative, so adding 0.5 and truncating rounds (and `as` saturates).
                px[k] = (top + (bottom - top) * fy + 0.5) as u8;
            }
            sx += step_x;
            sy += step_y;
        }
    }
    out
}

/// The RGB values at byte offset `at`, as floats.
#[inline]
fn texel(src: &[u8], at: usize) -> [f32; 3] {
    let p: [u8; 3] = src[at..at + 3].try_into().unwrap_or([0; 3]);
    p.map(f32::from)
}

fn luma(p: [u8; 3]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Brightness, contrast and light fall-off on luma, applied to each pixel as one common
/// factor on its channels (see the module docs).
fn photometric(
    mut image: RgbImage,
    brightness: f32,
    contrast: f32,
    (falloff, direction): (f32, f32),
) -> RgbImage {
    if brightness == 1.0 && contrast == 1.0 && falloff == 0.0 {
        return image;
    }
    let (width, height) = (image.width() as usize, image.height() as usize);
    let n = (width * height).max(1) as f32;
    // Position along the light's direction, 0 on the lit side and 1 on the far side.
    let (dx, dy) = (direction.cos(), direction.sin());
    let reach = (dx.abs() + dy.abs()).max(1e-6);
    let shade = |i: usize| -> f32 {
        let x = (i % width) as f32 / width.max(2) as f32 - 0.5;
        let y = (i / width) as f32 / height.max(2) as f32 - 0.5;
        1.0 - falloff * ((x * dx + y * dy) / reach + 0.5)
    };
    let buf: &mut [u8] = &mut image;
    let mean = buf
        .chunks_exact(3)
        .map(|p| luma([p[0], p[1], p[2]]))
        .sum::<f32>()
        / n;
    // target = (mean + contrast * (y - mean)) * brightness = gain * y + offset
    let gain = contrast * brightness;
    let offset = mean * (1.0 - contrast) * brightness;
    for (i, px) in buf.chunks_exact_mut(3).enumerate() {
        let (r, g, b) = (px[0], px[1], px[2]);
        let max = r.max(g).max(b);
        let y = luma([r, g, b]);
        let lit = if falloff == 0.0 { 1.0 } else { shade(i) };
        let target = ((gain * y + offset) * lit).clamp(0.0, 255.0);
        if max == 0 {
            // Black has no hue: it may become a grey.
            let grey = (target + 0.5) as u8;
            px.copy_from_slice(&[grey; 3]);
            continue;
        }
        let k = (target / y.max(1e-3)).min(255.0 / max as f32);
        for c in px.iter_mut() {
            *c = (*c as f32 * k + 0.5) as u8;
        }
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pure-colour garment (an ellipse with a rectangular body) on a white background.
    fn garment(colour: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let (dx, dy) = (x as f32 - 32.0, y as f32 - 30.0);
            let body = (dx / 18.0).powi(2) + (dy / 24.0).powi(2) <= 1.0
                || (x > 20 && x < 44 && y > 30 && y < 56);
            image::Rgb(if body { colour } else { [255, 255, 255] })
        })
    }

    /// Hue in degrees and HSV saturation of one pixel.
    fn hue_saturation(p: [u8; 3]) -> (f32, f32) {
        let [r, g, b] = p.map(|c| c as f32 / 255.0);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let d = max - min;
        if d <= 0.0 {
            return (0.0, 0.0);
        }
        let h = if max == r {
            60.0 * ((g - b) / d).rem_euclid(6.0)
        } else if max == g {
            60.0 * ((b - r) / d + 2.0)
        } else {
            60.0 * ((r - g) / d + 4.0)
        };
        (h, d / max)
    }

    /// Circular mean hue (degrees) and mean saturation of the clearly coloured pixels.
    /// Circular mean hue (degrees) and median saturation of the clearly coloured
    /// pixels. The median reads the garment's own saturation: blur and interpolation
    /// legitimately mix its outline with the background, like a soft photo does.
    fn mean_hue(image: &RgbImage) -> (f32, f32) {
        let (mut s, mut c) = (0.0f32, 0.0f32);
        let mut sat = Vec::new();
        for p in image.pixels() {
            let (h, sv) = hue_saturation(p.0);
            let v = *p.0.iter().max().unwrap_or(&0) as f32 / 255.0;
            if sv > 0.3 && v > 0.15 {
                s += h.to_radians().sin();
                c += h.to_radians().cos();
                sat.push(sv);
            }
        }
        assert!(sat.len() > 50, "the image has coloured pixels");
        sat.sort_by(f32::total_cmp);
        (
            s.atan2(c).to_degrees().rem_euclid(360.0),
            sat[sat.len() / 2],
        )
    }

    fn hue_gap(a: f32, b: f32) -> f32 {
        let d = (a - b).rem_euclid(360.0);
        d.min(360.0 - d)
    }

    #[test]
    fn mean_hue_is_unchanged_by_any_augmentation() {
        let cfg = AugmentConfig {
            probability: 1.0,
            ..AugmentConfig::default()
        };
        let extremes = [
            AugmentParams {
                flip: true,
                ..AugmentParams::identity()
            },
            AugmentParams {
                crop: [0.1, 0.2, 0.8, 0.7],
                ..AugmentParams::identity()
            },
            AugmentParams {
                rotation: 10f32.to_radians(),
                ..AugmentParams::identity()
            },
            AugmentParams {
                brightness: 1.15,
                ..AugmentParams::identity()
            },
            AugmentParams {
                brightness: 0.85,
                ..AugmentParams::identity()
            },
            AugmentParams {
                contrast: 1.15,
                ..AugmentParams::identity()
            },
            AugmentParams {
                contrast: 0.85,
                ..AugmentParams::identity()
            },
            AugmentParams {
                crop: [-0.2, -0.15, 1.4, 1.3],
                ..AugmentParams::identity()
            },
            AugmentParams {
                falloff: (0.3, 0.7),
                ..AugmentParams::identity()
            },
            AugmentParams {
                blur: 0.9,
                ..AugmentParams::identity()
            },
        ];
        let photo = AugmentConfig {
            probability: 1.0,
            ..AugmentConfig::photo_conditions()
        };
        for colour in [
            [200, 30, 40],
            [240, 130, 30],
            [40, 100, 210],
            [238, 128, 172],
            [40, 142, 64],
            [250, 250, 20],
        ] {
            let img = garment(colour);
            let (hue, sat) = mean_hue(&img);
            let drawn = (0..40)
                .filter_map(|i| cfg.draw(3, i / 8, i))
                .chain((0..40).filter_map(|i| photo.draw(5, i / 8, i)));
            for params in extremes.iter().cloned().chain(drawn) {
                let out = apply_params(&img, &params);
                assert_eq!(out.dimensions(), img.dimensions());
                let (h2, s2) = mean_hue(&out);
                assert!(
                    hue_gap(hue, h2) < 1.5,
                    "{colour:?} {params:?}: hue {hue} -> {h2}"
                );
                assert!(
                    (sat - s2).abs() < 0.03,
                    "{colour:?} {params:?}: saturation {sat} -> {s2}"
                );
            }
        }
    }

    #[test]
    fn the_hue_check_does_catch_a_hue_shift() {
        // The measure used above must notice a real hue change, or the test proves nothing.
        let img = garment([200, 30, 40]);
        let mut shifted = img.clone();
        for p in shifted.pixels_mut() {
            p.0 = [p.0[1], p.0[0], p.0[2]]; // swap R and G
        }
        assert!(hue_gap(mean_hue(&img).0, mean_hue(&shifted).0) > 30.0);
    }

    #[test]
    fn half_the_images_are_augmented_and_draws_are_reproducible() {
        let cfg = AugmentConfig::default();
        let n = 4000;
        let augmented = (0..n).filter(|&i| cfg.draw(9, 2, i).is_some()).count();
        assert!(
            (augmented as f32 / n as f32 - 0.5).abs() < 0.03,
            "{augmented}"
        );
        assert_eq!(cfg.draw(9, 2, 17), cfg.draw(9, 2, 17));
        // A new epoch draws anew.
        let same = (0..200)
            .filter(|&i| cfg.draw(9, 1, i) == cfg.draw(9, 2, i))
            .count();
        assert!(same < 150, "{same}");
    }

    /// Pixels that are clearly not the white background.
    fn garment_pixels(image: &RgbImage) -> usize {
        image
            .pixels()
            .filter(|p| p.0.iter().any(|&c| c < 200))
            .count()
    }

    #[test]
    fn photo_condition_steps_do_what_they_say() {
        let img = garment([40, 100, 210]);
        // Zooming out makes the garment smaller in the frame, by the area ratio.
        let zoomed = apply_params(
            &img,
            &AugmentParams {
                crop: [-0.2, -0.2, 1.4, 1.4],
                ..AugmentParams::identity()
            },
        );
        let ratio = garment_pixels(&zoomed) as f32 / garment_pixels(&img) as f32;
        assert!((ratio - 1.0 / 1.96).abs() < 0.06, "area ratio {ratio}");
        let cfg = AugmentConfig {
            probability: 1.0,
            ..AugmentConfig::photo_conditions()
        };
        let boxes: Vec<[f32; 4]> = (0..400)
            .filter_map(|i| cfg.draw(1, 0, i))
            .map(|p| p.crop)
            .collect();
        assert!(boxes.iter().any(|b| b[2] > 1.1) && boxes.iter().any(|b| b[2] < 0.95));
        for b in &boxes {
            // A box is inside the frame or contains it, never beside it.
            for (o, len) in [(b[0], b[2]), (b[1], b[3])] {
                if len <= 1.0 {
                    assert!(o >= 0.0 && o + len <= 1.0 + 1e-5, "{b:?}");
                } else {
                    assert!(o <= 1e-5 && o + len >= 1.0 - 1e-5, "{b:?}");
                }
            }
        }

        // Light from the left (direction 0: falling off towards the right).
        let grey = RgbImage::from_pixel(32, 32, image::Rgb([160, 160, 160]));
        let lit = apply_params(
            &grey,
            &AugmentParams {
                falloff: (0.3, 0.0),
                ..AugmentParams::identity()
            },
        );
        let (left, right) = (lit.get_pixel(0, 16).0[0], lit.get_pixel(31, 16).0[0]);
        assert!(left >= 155 && right <= 118, "left {left}, right {right}");

        // Blur smooths a checkerboard: neighbours grow closer.
        let board = RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb(if (x + y) % 2 == 0 { [250; 3] } else { [10; 3] })
        });
        let edges = |im: &RgbImage| -> u32 {
            (0..31)
                .map(|x| {
                    (im.get_pixel(x, 5).0[0] as i32 - im.get_pixel(x + 1, 5).0[0] as i32)
                        .unsigned_abs()
                })
                .sum()
        };
        let soft = apply_params(
            &board,
            &AugmentParams {
                blur: 0.9,
                ..AugmentParams::identity()
            },
        );
        assert!(
            edges(&soft) * 3 < edges(&board),
            "{} vs {}",
            edges(&soft),
            edges(&board)
        );
    }

    #[test]
    fn settings_without_the_new_steps_draw_as_before() {
        // The newer draws come after the older ones: the crop, rotation and colour of
        // a run saved before them stay the same.
        let old = AugmentConfig::default();
        let new = AugmentConfig {
            light_falloff: 0.3,
            blur: 0.5,
            ..AugmentConfig::default()
        };
        for i in 0..100 {
            match (old.draw(4, 1, i), new.draw(4, 1, i)) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    assert_eq!((a.flip, a.crop, a.rotation), (b.flip, b.crop, b.rotation));
                    assert_eq!((a.brightness, a.contrast), (b.brightness, b.contrast));
                    assert_eq!((a.falloff, a.blur), ((0.0, 0.0), 0.0));
                }
                _ => panic!("the same images are augmented"),
            }
        }
    }

    #[test]
    fn identity_and_flip_behave() {
        let img = garment([200, 30, 40]);
        assert_eq!(apply_params(&img, &AugmentParams::identity()), img);
        let mut asym = img.clone();
        asym.put_pixel(0, 0, image::Rgb([1, 2, 3]));
        let flipped = apply_params(
            &asym,
            &AugmentParams {
                flip: true,
                ..AugmentParams::identity()
            },
        );
        assert_eq!(flipped.get_pixel(63, 0).0, [1, 2, 3]);
        let cfg = AugmentConfig {
            probability: 0.0,
            ..AugmentConfig::default()
        };
        assert!(matches!(cfg.apply(&img, 1, 1, 1), Cow::Borrowed(_)));
    }
}
