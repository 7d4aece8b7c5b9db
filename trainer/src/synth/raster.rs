//! A small rasteriser for the synthetic garments: shapes in a garment-local frame,
//! filled pixel by pixel on a supersampled float canvas, with seams drawn where parts
//! meet and a soft drop shadow.
//!
//! Coordinates: the garment is built in local units (about -1..1, y pointing down) and a
//! [`Frame`] places it on the canvas (scale, rotation, offset). Filling walks the
//! canvas pixels of a shape's bounding box and maps each back to local coordinates, so
//! prints rotate and scale with the garment.

/// Linear RGB in 0..1 (the values are sRGB code values / 255; no gamma handling is
/// needed for drawing flat shapes).
pub type Rgb = [f32; 3];
/// A point in garment-local units.
pub type P = [f32; 2];

pub fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

pub fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

pub fn rgb(r: u8, g: u8, b: u8) -> Rgb {
    [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0]
}

/// Rec. 601 luma, 0..1.
pub fn luma(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// Places garment-local coordinates on the canvas:
/// `canvas = centre + scale * rotate(angle) * local`.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub centre: [f32; 2],
    pub scale: f32,
    cos: f32,
    sin: f32,
}

impl Frame {
    pub fn new(centre: [f32; 2], scale: f32, angle: f32) -> Self {
        Self {
            centre,
            scale,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    pub fn to_canvas(&self, p: P) -> [f32; 2] {
        let (x, y) = (p[0] * self.scale, p[1] * self.scale);
        [
            self.centre[0] + self.cos * x - self.sin * y,
            self.centre[1] + self.sin * x + self.cos * y,
        ]
    }

    pub fn to_local(&self, x: f32, y: f32) -> P {
        let (dx, dy) = (
            (x - self.centre[0]) / self.scale,
            (y - self.centre[1]) / self.scale,
        );
        [
            self.cos * dx + self.sin * dy,
            -self.sin * dx + self.cos * dy,
        ]
    }
}

/// A filled region in local units.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A simple polygon (even-odd rule).
    Poly(Vec<P>),
    /// An ellipse with radii `r`, turned by `angle` radians.
    Ellipse { c: P, r: [f32; 2], angle: f32 },
    /// All points within `r` of the segment `a`-`b` (a thick line with round ends).
    Capsule { a: P, b: P, r: f32 },
}

impl Shape {
    pub fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Shape::Poly(vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    }

    pub fn disc(c: P, r: f32) -> Self {
        Shape::Ellipse {
            c,
            r: [r, r],
            angle: 0.0,
        }
    }

    /// The mirror image in the garment's centre line (x -> -x).
    pub fn mirrored(&self) -> Self {
        let m = |p: &P| [-p[0], p[1]];
        match self {
            Shape::Poly(ps) => Shape::Poly(ps.iter().map(m).collect()),
            Shape::Ellipse { c, r, angle } => Shape::Ellipse {
                c: m(c),
                r: *r,
                angle: -angle,
            },
            Shape::Capsule { a, b, r } => Shape::Capsule {
                a: m(a),
                b: m(b),
                r: *r,
            },
        }
    }

    pub fn contains(&self, p: P) -> bool {
        match self {
            Shape::Poly(ps) => {
                let mut inside = false;
                let mut j = ps.len() - 1;
                for i in 0..ps.len() {
                    let (a, b) = (ps[i], ps[j]);
                    if (a[1] > p[1]) != (b[1] > p[1])
                        && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
                    {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
            Shape::Ellipse { c, r, angle } => {
                let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
                let (s, co) = angle.sin_cos();
                let (x, y) = (co * dx + s * dy, -s * dx + co * dy);
                (x / r[0]).powi(2) + (y / r[1]).powi(2) <= 1.0
            }
            Shape::Capsule { a, b, r } => segment_distance(p, *a, *b) <= *r,
        }
    }

    /// Local-unit bounding box `(min, max)`.
    pub fn bounds(&self) -> (P, P) {
        match self {
            Shape::Poly(ps) => ps.iter().fold(
                ([f32::MAX, f32::MAX], [f32::MIN, f32::MIN]),
                |(lo, hi), p| {
                    (
                        [lo[0].min(p[0]), lo[1].min(p[1])],
                        [hi[0].max(p[0]), hi[1].max(p[1])],
                    )
                },
            ),
            Shape::Ellipse { c, r, .. } => {
                let m = r[0].max(r[1]);
                ([c[0] - m, c[1] - m], [c[0] + m, c[1] + m])
            }
            Shape::Capsule { a, b, r } => (
                [a[0].min(b[0]) - r, a[1].min(b[1]) - r],
                [a[0].max(b[0]) + r, a[1].max(b[1]) + r],
            ),
        }
    }
}

/// Distance from `p` to the segment `a`-`b`.
pub fn segment_distance(p: P, a: P, b: P) -> f32 {
    let (abx, aby) = (b[0] - a[0], b[1] - a[1]);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (p[0] - a[0] - t * abx, p[1] - a[1] - t * aby);
    (dx * dx + dy * dy).sqrt()
}

/// A float RGB canvas with a part id per pixel (0 = background).
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Rgb>,
    pub ids: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: impl Fn(usize, usize) -> Rgb) -> Self {
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                pixels.push(background(x, y));
            }
        }
        Self {
            width,
            height,
            pixels,
            ids: vec![0; width * height],
        }
    }

    /// Paints `shape` through `frame`: `paint(local)` gives the colour and opacity at a
    /// point, or `None` to leave it untouched. Painted pixels take part id `id`.
    pub fn fill(
        &mut self,
        frame: &Frame,
        shape: &Shape,
        id: u8,
        paint: &dyn Fn(P) -> Option<(Rgb, f32)>,
    ) {
        let (lo, hi) = shape.bounds();
        let corners = [
            [lo[0], lo[1]],
            [hi[0], lo[1]],
            [lo[0], hi[1]],
            [hi[0], hi[1]],
        ]
        .map(|c| frame.to_canvas(c));
        let min_x = corners
            .iter()
            .map(|c| c[0])
            .fold(f32::MAX, f32::min)
            .floor()
            .max(0.0) as usize;
        let min_y = corners
            .iter()
            .map(|c| c[1])
            .fold(f32::MAX, f32::min)
            .floor()
            .max(0.0) as usize;
        let max_x = (corners.iter().map(|c| c[0]).fold(f32::MIN, f32::max).ceil() as isize)
            .min(self.width as isize - 1);
        let max_y = (corners.iter().map(|c| c[1]).fold(f32::MIN, f32::max).ceil() as isize)
            .min(self.height as isize - 1);
        if max_x < 0 || max_y < 0 {
            return;
        }
        for y in min_y..=max_y as usize {
            for x in min_x..=max_x as usize {
                let p = frame.to_local(x as f32 + 0.5, y as f32 + 0.5);
                if !shape.contains(p) {
                    continue;
                }
                if let Some((colour, alpha)) = paint(p) {
                    let i = y * self.width + x;
                    self.pixels[i] = lerp(self.pixels[i], colour, alpha.clamp(0.0, 1.0));
                    self.ids[i] = id;
                }
            }
        }
    }

    /// Darkens garment pixels that touch a pixel of another part (or the background):
    /// stitched seams and outlines.
    pub fn seams(&mut self, darken: f32) {
        let (w, h) = (self.width, self.height);
        let ids = &self.ids;
        let mut edge = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if ids[i] == 0 {
                    continue;
                }
                let differs = (x > 0 && ids[i - 1] != ids[i])
                    || (x + 1 < w && ids[i + 1] != ids[i])
                    || (y > 0 && ids[i - w] != ids[i])
                    || (y + 1 < h && ids[i + w] != ids[i]);
                edge[i] = differs;
            }
        }
        for (p, e) in self.pixels.iter_mut().zip(edge) {
            if e {
                // On dark cloth a seam catches the light instead.
                *p = if luma(*p) < 0.2 {
                    lerp(*p, [0.6; 3], 0.3)
                } else {
                    scale(*p, darken)
                };
            }
        }
    }

    /// A soft shadow of the garment on the background, offset by `(dx, dy)` pixels.
    pub fn shadow(&mut self, dx: isize, dy: isize, radius: usize, strength: f32) {
        let (w, h) = (self.width, self.height);
        let mut mask: Vec<f32> = self
            .ids
            .iter()
            .map(|&id| if id > 0 { 1.0 } else { 0.0 })
            .collect();
        for _ in 0..2 {
            box_blur(&mut mask, w, h, radius);
        }
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if self.ids[i] != 0 {
                    continue;
                }
                let (sx, sy) = (x as isize - dx, y as isize - dy);
                if sx < 0 || sy < 0 || sx >= w as isize || sy >= h as isize {
                    continue;
                }
                let m = mask[sy as usize * w + sx as usize];
                self.pixels[i] = scale(self.pixels[i], 1.0 - strength * m);
            }
        }
    }

    /// Averages `factor x factor` blocks: the supersampled canvas at output size.
    pub fn downsample(&self, factor: usize) -> (usize, usize, Vec<Rgb>) {
        let (w, h) = (self.width / factor, self.height / factor);
        let norm = 1.0 / (factor * factor) as f32;
        let mut out = vec![[0.0; 3]; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                for sy in 0..factor {
                    for sx in 0..factor {
                        let p = self.pixels[(y * factor + sy) * self.width + x * factor + sx];
                        acc[0] += p[0];
                        acc[1] += p[1];
                        acc[2] += p[2];
                    }
                }
                out[y * w + x] = scale(acc, norm);
            }
        }
        (w, h, out)
    }
}

/// Separable box blur of a single-channel image, in place, clamping at the edges.
/// Running sums make it cost the same whatever the radius.
pub fn box_blur(values: &mut [f32], w: usize, h: usize, radius: usize) {
    if radius == 0 || w == 0 || h == 0 {
        return;
    }
    let norm = 1.0 / (2 * radius + 1) as f32;
    let r = radius as isize;
    // One line of `n` values at `stride` apart, from `start`.
    let blur_line =
        |values: &mut [f32], start: usize, n: usize, stride: usize, line: &mut Vec<f32>| {
            line.clear();
            line.extend((0..n).map(|k| values[start + k * stride]));
            let at = |k: isize| line[k.clamp(0, n as isize - 1) as usize];
            let mut acc: f32 = (-r..=r).map(at).sum();
            for k in 0..n {
                values[start + k * stride] = acc * norm;
                acc += at(k as isize + r + 1) - at(k as isize - r);
            }
        };
    let mut line = Vec::with_capacity(w.max(h));
    for y in 0..h {
        blur_line(values, y * w, w, 1, &mut line);
    }
    for x in 0..w {
        blur_line(values, x, h, w, &mut line);
    }
}

/// Separable box blur of an RGB image, in place.
pub fn box_blur_rgb(pixels: &mut [Rgb], w: usize, h: usize, radius: usize) {
    if radius == 0 {
        return;
    }
    for c in 0..3 {
        let mut channel: Vec<f32> = pixels.iter().map(|p| p[c]).collect();
        box_blur(&mut channel, w, h, radius);
        for (p, v) in pixels.iter_mut().zip(channel) {
            p[c] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_contain_what_they_should() {
        let tri = Shape::Poly(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]);
        assert!(tri.contains([0.2, 0.2]));
        assert!(!tri.contains([0.8, 0.8]));
        let e = Shape::Ellipse {
            c: [0.0, 0.0],
            r: [2.0, 1.0],
            angle: 0.0,
        };
        assert!(e.contains([1.9, 0.0]) && !e.contains([0.0, 1.1]));
        let turned = Shape::Ellipse {
            c: [0.0, 0.0],
            r: [2.0, 1.0],
            angle: std::f32::consts::FRAC_PI_2,
        };
        assert!(turned.contains([0.0, 1.9]) && !turned.contains([1.1, 0.0]));
        let cap = Shape::Capsule {
            a: [0.0, 0.0],
            b: [1.0, 0.0],
            r: 0.1,
        };
        assert!(cap.contains([0.5, 0.05]) && !cap.contains([0.5, 0.2]));
    }

    #[test]
    fn box_blur_spreads_and_keeps_the_total() {
        let mut v = vec![0.0f32; 9 * 9];
        v[4 * 9 + 4] = 81.0;
        box_blur(&mut v, 9, 9, 1);
        assert!((v[4 * 9 + 4] - 9.0).abs() < 1e-4 && (v[3 * 9 + 5] - 9.0).abs() < 1e-4);
        assert_eq!(v[2 * 9 + 4], 0.0);
        assert!((v.iter().sum::<f32>() - 81.0).abs() < 1e-3);
    }

    #[test]
    fn frame_round_trips() {
        let f = Frame::new([50.0, 60.0], 30.0, 0.3);
        let p = f.to_local(70.0, 40.0);
        let back = f.to_canvas(p);
        assert!((back[0] - 70.0).abs() < 1e-3 && (back[1] - 40.0).abs() < 1e-3);
    }

    #[test]
    fn fill_paints_inside_only_and_seams_outline() {
        let mut c = Canvas::new(20, 20, |_, _| [1.0; 3]);
        let f = Frame::new([10.0, 10.0], 5.0, 0.0);
        c.fill(&f, &Shape::rect(-1.0, -1.0, 1.0, 1.0), 1, &|_| {
            Some(([1.0, 0.0, 0.0], 1.0))
        });
        assert_eq!(c.pixels[10 * 20 + 10], [1.0, 0.0, 0.0]);
        assert_eq!(c.pixels[0], [1.0; 3]);
        c.seams(0.5);
        assert_eq!(c.pixels[10 * 20 + 10], [1.0, 0.0, 0.0]);
        assert_eq!(c.pixels[5 * 20 + 10], [0.5, 0.0, 0.0], "top edge is a seam");
    }
}
