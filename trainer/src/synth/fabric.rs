//! Fabrics: a base colour (solid or colour-blocked), a weave texture, printed or woven
//! motifs and sequins, all as functions of the garment-local point, so that they follow
//! the garment when it is moved, scaled or turned.
//!
//! Repeating motifs live on a grid of cells (`period` local units wide); a hash of the
//! cell decides jitter, turn and presence, so no randomness is needed at paint time.

use super::raster::{lerp, luma, scale, Rgb, P};
use crate::rng::mix64;
use std::f32::consts::{PI, TAU};

/// The colour under the prints.
#[derive(Debug, Clone)]
pub enum Base {
    Solid(Rgb),
    /// Several colours in blocks: what the catalogues call multicolour.
    Blocks {
        colours: Vec<Rgb>,
        style: BlockStyle,
        size: f32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStyle {
    /// Horizontal bands.
    Bands,
    /// Diagonal bands.
    Diagonal,
    /// Colour-blocked quarters.
    Quarters,
    /// Wavy tie-dye-like bands.
    Waves,
}

/// A weave that modulates the base colour's brightness (never its hue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texture {
    Plain,
    /// Vertical ribs and stitch rows: knitwear.
    Knit,
    /// A small tone-on-tone diamond weave.
    Jacquard,
}

/// What a motif layer draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MotifKind {
    Stripes {
        vertical: bool,
        duty: f32,
    },
    Checks,
    Dots,
    /// Rows of letter-like glyphs inside `region`.
    Text,
    /// One large shape centred in `region`.
    Graphic,
    /// Scattered smileys, hearts and stars in bright colours.
    Quirky,
    /// All-over wavy bands in two bright colours.
    Funky,
    Floral,
    /// Paisley teardrops (ethnic motif).
    Paisley,
    /// Peacock-feather eyes.
    Peacock,
    Elephant,
    /// Large sewn-on patches with stitched edges.
    Applique,
    /// Leaves on a stem.
    Botanical,
    /// Small block-printed diamonds.
    SmallBlock,
    /// Small sparse flowers (saree buttis).
    Buttis,
    /// Woven diamond lattice.
    Lattice,
    /// Thin metallic lines.
    ZariLines,
}

/// One layer of motifs.
#[derive(Debug, Clone)]
pub struct Motif {
    pub kind: MotifKind,
    pub colour: Rgb,
    pub accent: Rgb,
    /// Cell size in local units.
    pub period: f32,
    /// Motif size within its cell (1 = as designed).
    pub size: f32,
    /// Local-unit box `[x0, y0, x1, y1]` the layer is limited to (chest prints).
    pub region: Option<[f32; 4]>,
    pub seed: u64,
}

/// A garment's cloth.
#[derive(Debug, Clone)]
pub struct Fabric {
    pub base: Base,
    pub texture: Texture,
    pub motifs: Vec<Motif>,
    /// Sequins: small bright specks (party wear).
    pub sparkle: bool,
    pub seed: u64,
}

impl Fabric {
    pub fn solid(colour: Rgb) -> Self {
        Self {
            base: Base::Solid(colour),
            texture: Texture::Plain,
            motifs: Vec::new(),
            sparkle: false,
            seed: 0,
        }
    }

    /// The main colour: the solid colour or the first block colour.
    pub fn main_colour(&self) -> Rgb {
        match &self.base {
            Base::Solid(c) => *c,
            Base::Blocks { colours, .. } => colours[0],
        }
    }

    /// The cloth's colour at local point `p`.
    pub fn at(&self, p: P) -> Rgb {
        let mut c = self.base_at(p);
        c = scale(c, texture_shade(self.texture, p));
        for m in &self.motifs {
            if let Some(mc) = m.at(p) {
                c = mc;
            }
        }
        if self.sparkle && sparkle_at(p, self.seed) {
            c = lerp(c, [1.0, 0.97, 0.86], 0.85);
        }
        c
    }

    fn base_at(&self, p: P) -> Rgb {
        match &self.base {
            Base::Solid(c) => *c,
            Base::Blocks {
                colours,
                style,
                size,
            } => {
                let n = colours.len() as i64;
                let t = match style {
                    BlockStyle::Bands => p[1] / size,
                    BlockStyle::Diagonal => (p[0] + p[1]) / size,
                    BlockStyle::Waves => (p[1] + 0.12 * (p[0] * 7.0).sin()) / size,
                    BlockStyle::Quarters => {
                        let q = (p[0] > 0.02) as i64 + 2 * (p[1] > 0.05) as i64;
                        return colours[(q % n) as usize];
                    }
                };
                colours[(t.floor() as i64).rem_euclid(n) as usize]
            }
        }
    }
}

fn texture_shade(texture: Texture, p: P) -> f32 {
    match texture {
        Texture::Plain => 1.0,
        Texture::Knit => {
            let rib = frac(p[0] / 0.055);
            let row = frac(p[1] / 0.045);
            let mut s = if rib < 0.35 { 0.8 } else { 1.0 };
            if row < 0.25 {
                s *= 0.92;
            }
            s
        }
        Texture::Jacquard => {
            let (x, y) = (frac(p[0] / 0.09) - 0.5, frac(p[1] / 0.09) - 0.5);
            if ((x.abs() + y.abs()) - 0.3).abs() < 0.09 {
                1.22
            } else {
                0.9
            }
        }
    }
}

fn sparkle_at(p: P, seed: u64) -> bool {
    let c = cell(p, 0.07, true);
    let h = cell_hash(seed ^ 0x5EC1, c.i, c.j);
    unit(h, 0) < 0.35
        && (c.x - (unit(h, 1) - 0.5) * 0.4).hypot(c.y - (unit(h, 2) - 0.5) * 0.4) < 0.17
}

fn frac(x: f32) -> f32 {
    x - x.floor()
}

/// A point's cell on a square grid (rows shifted by half a cell when `brick`), with
/// the point's position inside it in `-0.5..0.5`.
struct Cell {
    i: i64,
    j: i64,
    x: f32,
    y: f32,
}

fn cell(p: P, period: f32, brick: bool) -> Cell {
    let gy = p[1] / period;
    let j = gy.floor();
    let gx = p[0] / period
        + if brick && (j as i64).rem_euclid(2) == 1 {
            0.5
        } else {
            0.0
        };
    let i = gx.floor();
    Cell {
        i: i as i64,
        j: j as i64,
        x: gx - i - 0.5,
        y: gy - j - 0.5,
    }
}

fn cell_hash(seed: u64, i: i64, j: i64) -> u64 {
    mix64(
        seed ^ mix64(
            (i as u64).wrapping_mul(0x9E37_79B9)
                ^ (j as u64).wrapping_mul(0x85EB_CA6B).rotate_left(32),
        ),
    )
}

/// The `k`-th byte of a hash as a number in `0..1`.
fn unit(h: u64, k: u32) -> f32 {
    ((h >> (8 * (k % 8))) & 0xFF) as f32 / 256.0
}

/// `(x, y)` turned by `angle`.
fn turn(x: f32, y: f32, angle: f32) -> (f32, f32) {
    let (s, c) = angle.sin_cos();
    (c * x + s * y, -s * x + c * y)
}

fn in_disc(x: f32, y: f32, cx: f32, cy: f32, r: f32) -> bool {
    (x - cx).powi(2) + (y - cy).powi(2) <= r * r
}

fn in_ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32, angle: f32) -> bool {
    let (u, v) = turn(x - cx, y - cy, angle);
    (u / rx).powi(2) + (v / ry).powi(2) <= 1.0
}

fn near_segment(x: f32, y: f32, a: P, b: P, r: f32) -> bool {
    super::raster::segment_distance([x, y], a, b) <= r
}

/// Bright colours for quirky prints and patches.
const BRIGHT: [Rgb; 6] = [
    [0.95, 0.35, 0.3],
    [0.2, 0.6, 0.95],
    [0.98, 0.8, 0.15],
    [0.3, 0.8, 0.45],
    [0.7, 0.4, 0.9],
    [1.0, 0.55, 0.1],
];

impl Motif {
    pub fn new(kind: MotifKind, colour: Rgb, accent: Rgb, period: f32, seed: u64) -> Self {
        Self {
            kind,
            colour,
            accent,
            period,
            size: 1.0,
            region: None,
            seed,
        }
    }

    pub fn in_region(mut self, region: [f32; 4]) -> Self {
        self.region = Some(region);
        self
    }

    pub fn sized(mut self, size: f32) -> Self {
        self.size = size;
        self
    }

    /// The motif's colour at `p`, or `None` where the base shows.
    pub fn at(&self, p: P) -> Option<Rgb> {
        if let Some([x0, y0, x1, y1]) = self.region {
            if p[0] < x0 || p[0] > x1 || p[1] < y0 || p[1] > y1 {
                return None;
            }
        }
        let s = self.size;
        let (col, acc) = (self.colour, self.accent);
        match self.kind {
            MotifKind::Stripes { vertical, duty } => {
                let t = if vertical { p[0] } else { p[1] } / self.period;
                (frac(t) < duty).then_some(col)
            }
            MotifKind::Checks => {
                let (fu, fv) = (frac(p[0] / self.period), frac(p[1] / self.period));
                match (fu < 0.28, fv < 0.28) {
                    (true, true) => Some(acc),
                    (true, false) | (false, true) => Some(col),
                    _ => None,
                }
            }
            MotifKind::Dots => {
                let c = cell(p, self.period, true);
                in_disc(c.x, c.y, 0.0, 0.0, 0.2 * s).then_some(col)
            }
            MotifKind::Text => self.text_at(p),
            MotifKind::Graphic => self.graphic_at(p),
            MotifKind::Quirky => {
                let c = cell(p, self.period, true);
                let h = cell_hash(self.seed, c.i, c.j);
                if unit(h, 0) > 0.6 {
                    return None;
                }
                let colour = BRIGHT[(h >> 16) as usize % BRIGHT.len()];
                let (x, y) = (
                    c.x - (unit(h, 3) - 0.5) * 0.2,
                    c.y - (unit(h, 4) - 0.5) * 0.2,
                );
                match (h >> 40) % 3 {
                    0 => {
                        // A smiley: face, two eyes, a smile.
                        if !in_disc(x, y, 0.0, 0.0, 0.3 * s) {
                            return None;
                        }
                        let eye = in_disc(x, y, -0.1 * s, -0.08 * s, 0.05 * s)
                            || in_disc(x, y, 0.1 * s, -0.08 * s, 0.05 * s);
                        let r = x.hypot(y - 0.0);
                        let smile = y > 0.04 * s && (r - 0.18 * s).abs() < 0.035 * s;
                        Some(if eye || smile {
                            [0.1, 0.1, 0.1]
                        } else {
                            colour
                        })
                    }
                    1 => heart(x, y, 0.28 * s).then_some(colour),
                    _ => star(x, y, 0.32 * s, 0.14 * s, 0.0).then_some(colour),
                }
            }
            MotifKind::Funky => {
                let (u, v) = (p[0] / self.period, p[1] / self.period);
                let t = v + 0.45 * (u * 2.7).sin() + 0.25 * (u * 6.1 + v * 1.7).sin();
                match ((t * 2.0).floor() as i64).rem_euclid(4) {
                    0 => Some(col),
                    2 => Some(acc),
                    _ => None,
                }
            }
            MotifKind::Floral => {
                let c = cell(p, self.period, true);
                let h = cell_hash(self.seed, c.i, c.j);
                let (x, y) = turn(c.x, c.y, unit(h, 0) * TAU);
                if in_disc(x, y, 0.0, 0.0, 0.08 * s) {
                    return Some(acc);
                }
                let petals = (0..5).any(|k| {
                    let a = k as f32 * TAU / 5.0;
                    in_disc(x, y, 0.17 * s * a.cos(), 0.17 * s * a.sin(), 0.12 * s)
                });
                if petals {
                    return Some(col);
                }
                // A leaf on some flowers.
                (unit(h, 2) < 0.5 && in_ellipse(x, y, 0.3 * s, 0.25 * s, 0.05 * s, 0.12 * s, 0.8))
                    .then_some(lerp(acc, [0.2, 0.5, 0.25], 0.7))
            }
            MotifKind::Paisley => {
                let c = cell(p, self.period, true);
                let h = cell_hash(self.seed, c.i, c.j);
                let (x, y) = turn(
                    c.x,
                    c.y,
                    (unit(h, 0) - 0.5) * 0.8 + if c.j % 2 == 0 { 0.0 } else { PI },
                );
                if in_disc(x, y, 0.0, 0.08 * s, 0.08 * s) {
                    return Some(acc);
                }
                (in_disc(x, y, 0.0, 0.08 * s, 0.19 * s)
                    || in_disc(x, y, 0.09 * s, -0.1 * s, 0.11 * s)
                    || in_disc(x, y, 0.15 * s, -0.24 * s, 0.06 * s))
                .then_some(col)
            }
            MotifKind::Peacock => {
                let c = cell(p, self.period, true);
                let (x, y) = (c.x, c.y);
                if in_ellipse(x, y, 0.0, -0.05 * s, 0.07 * s, 0.1 * s, 0.0) {
                    return Some([0.08, 0.12, 0.4]);
                }
                if in_ellipse(x, y, 0.0, -0.05 * s, 0.13 * s, 0.19 * s, 0.0) {
                    return Some(acc);
                }
                if in_ellipse(x, y, 0.0, -0.05 * s, 0.2 * s, 0.3 * s, 0.0) {
                    return Some(col);
                }
                near_segment(x, y, [0.0, 0.25 * s], [0.0, 0.48], 0.02 * s).then_some(col)
            }
            MotifKind::Elephant => {
                let c = cell(p, self.period, true);
                let (x, y) = (if c.j % 2 == 0 { c.x } else { -c.x }, c.y);
                if in_ellipse(x, y, -0.02 * s, -0.03 * s, 0.14 * s, 0.07 * s, 0.0) {
                    return Some(acc); // the saddle cloth
                }
                let body = in_ellipse(x, y, 0.0, 0.0, 0.24 * s, 0.14 * s, 0.0)
                    || in_disc(x, y, 0.22 * s, -0.07 * s, 0.11 * s)
                    || near_segment(x, y, [0.3 * s, -0.03 * s], [0.33 * s, 0.2 * s], 0.035 * s)
                    || [-0.15, -0.05, 0.06, 0.15].iter().any(|&lx| {
                        near_segment(x, y, [lx * s, 0.08 * s], [lx * s, 0.26 * s], 0.04 * s)
                    });
                body.then_some(col)
            }
            MotifKind::Applique => {
                let c = cell(p, self.period, true);
                let h = cell_hash(self.seed, c.i, c.j);
                if unit(h, 0) > 0.45 {
                    return None;
                }
                let colour = BRIGHT[(h >> 16) as usize % BRIGHT.len()];
                let (x, y) = (c.x, c.y);
                let (r, th) = (x.hypot(y), y.atan2(x));
                let edge = 0.3
                    * s
                    * if (h >> 30).is_multiple_of(2) {
                        1.0
                    } else {
                        0.75 + 0.25 * (5.0 * th).cos()
                    };
                if r > edge {
                    return None;
                }
                // A dashed stitch line just inside the edge.
                let stitched =
                    r > edge - 0.05 * s && r < edge - 0.02 * s && frac(th * 12.0 / TAU) < 0.5;
                Some(if stitched {
                    scale(colour, 0.45)
                } else {
                    colour
                })
            }
            MotifKind::Botanical => {
                let c = cell(p, self.period, false);
                let h = cell_hash(self.seed, c.i, c.j);
                let (x, y) = turn(c.x, c.y, (unit(h, 0) - 0.5) * 0.6);
                if near_segment(x, y, [-0.35, 0.35], [0.35, -0.35], 0.018) {
                    return Some(scale(col, 0.7));
                }
                let leaf =
                    [(0.25f32, 1.0f32), (0.5, -1.0), (0.75, 1.0)]
                        .iter()
                        .any(|&(t, side)| {
                            let (sx, sy) = (-0.35 + 0.7 * t, 0.35 - 0.7 * t);
                            in_ellipse(
                                x,
                                y,
                                sx + side * 0.09 * s,
                                sy + side * 0.09 * s,
                                0.06 * s,
                                0.15 * s,
                                side * 0.8,
                            )
                        });
                leaf.then_some(col)
            }
            MotifKind::SmallBlock => {
                let c = cell(p, self.period, true);
                let d = c.x.abs() + c.y.abs();
                if d < 0.08 * s {
                    Some(acc)
                } else if d < 0.24 * s {
                    Some(col)
                } else {
                    None
                }
            }
            MotifKind::Buttis => {
                let c = cell(p, self.period, true);
                if in_disc(c.x, c.y, 0.0, 0.0, 0.05 * s) {
                    return Some(acc);
                }
                (0..4)
                    .any(|k| {
                        let a = k as f32 * TAU / 4.0 + 0.4;
                        in_disc(c.x, c.y, 0.09 * s * a.cos(), 0.09 * s * a.sin(), 0.06 * s)
                    })
                    .then_some(col)
            }
            MotifKind::Lattice => {
                let c = cell(p, self.period, false);
                let d = c.x.abs() + c.y.abs();
                if (d - 0.38).abs() < 0.06 {
                    Some(col)
                } else {
                    in_disc(c.x, c.y, 0.0, 0.0, 0.07 * s).then_some(acc)
                }
            }
            MotifKind::ZariLines => {
                if frac(p[1] / self.period) < 0.14 {
                    return Some(col);
                }
                let c = cell(p, self.period, true);
                in_disc(c.x, c.y, 0.0, 0.0, 0.09 * s).then_some(acc)
            }
        }
    }

    /// Rows of made-up letters (3 x 5 pixel glyphs) with word gaps, inside the region.
    fn text_at(&self, p: P) -> Option<Rgb> {
        let [x0, y0, _, _] = self.region.unwrap_or([-0.5, -0.5, 0.5, 0.5]);
        let line_h = self.period;
        let letter_w = self.period * 0.7;
        let (lx, ly) = ((p[0] - x0) / letter_w, (p[1] - y0) / line_h);
        let (col_i, row_i) = (lx.floor() as i64, ly.floor() as i64);
        let h = cell_hash(self.seed, col_i, row_i);
        if unit(h, 7) < 0.18 {
            return None; // a space between words
        }
        let (fx, fy) = (frac(lx), frac(ly));
        // The glyph fills 75% of the letter width and 70% of the line height.
        if fx > 0.75 || fy > 0.7 {
            return None;
        }
        let (gx, gy) = ((fx / 0.25) as u32, (fy / 0.14) as u32);
        let bit = gy * 3 + gx;
        // Rows 0 and 4 and column 0 are drawn more often: glyphs look like letters.
        let on = (h >> bit) & 1 == 1
            || (gx == 0 && (h >> 20) & 1 == 1)
            || (gy == 4 && (h >> 21) & 1 == 1);
        on.then_some(self.colour)
    }

    /// One large centred shape with an accent, inside the region.
    fn graphic_at(&self, p: P) -> Option<Rgb> {
        let [x0, y0, x1, y1] = self.region.unwrap_or([-0.3, -0.3, 0.3, 0.3]);
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let r = (x1 - x0).min(y1 - y0) / 2.0;
        let (x, y) = ((p[0] - cx) / r, (p[1] - cy) / r);
        match self.seed % 4 {
            0 => {
                let d = x.hypot(y);
                if d < 0.55 {
                    Some(self.accent)
                } else {
                    (d < 0.95).then_some(self.colour)
                }
            }
            1 => {
                // A triangle with a band across it.
                let inside = y < 0.8 && y > -0.9 + 1.7 * x.abs();
                if !inside {
                    return None;
                }
                Some(if (y - 0.25).abs() < 0.15 {
                    self.accent
                } else {
                    self.colour
                })
            }
            2 => star(x, y, 1.0, 0.45, 0.0).then(|| {
                if x.hypot(y) < 0.3 {
                    self.accent
                } else {
                    self.colour
                }
            }),
            _ => {
                let d = x.abs() + y.abs();
                (d < 0.95).then(|| {
                    if frac((x + y) * 3.0) < 0.5 {
                        self.accent
                    } else {
                        self.colour
                    }
                })
            }
        }
    }
}

fn heart(x: f32, y: f32, r: f32) -> bool {
    let lobes = in_disc(x, y, -0.45 * r, -0.25 * r, 0.52 * r)
        || in_disc(x, y, 0.45 * r, -0.25 * r, 0.52 * r);
    let point = y > -0.25 * r && y < 0.95 * r && x.abs() < 0.95 * r * (0.95 * r - y) / (1.2 * r);
    lobes || point
}

/// A five-pointed star of outer radius `r_out` and inner radius `r_in`.
fn star(x: f32, y: f32, r_out: f32, r_in: f32, angle: f32) -> bool {
    let r = x.hypot(y);
    if r > r_out {
        return false;
    }
    let th = y.atan2(x) - angle + PI / 2.0;
    let sector = TAU / 5.0;
    let t = (frac(th / sector) - 0.5).abs() * 2.0; // 0 at a point, 1 between points
    r <= r_out + (r_in - r_out) * t
}

/// A colour that stands out against `base` (for prints and borders).
pub fn contrasting(base: Rgb, candidates: &[Rgb], pick: usize) -> Rgb {
    let good: Vec<Rgb> = candidates
        .iter()
        .copied()
        .filter(|c| (luma(*c) - luma(base)).abs() > 0.3)
        .collect();
    if good.is_empty() {
        if luma(base) > 0.5 {
            [0.08, 0.08, 0.1]
        } else {
            [0.96, 0.95, 0.92]
        }
    } else {
        good[pick % good.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(m: &Motif) -> f32 {
        let n = 80;
        let mut hit = 0;
        for y in 0..n {
            for x in 0..n {
                let p = [
                    x as f32 / n as f32 * 2.0 - 1.0,
                    y as f32 / n as f32 * 2.0 - 1.0,
                ];
                hit += m.at(p).is_some() as usize;
            }
        }
        hit as f32 / (n * n) as f32
    }

    #[test]
    fn every_motif_draws_something_and_leaves_base_showing() {
        use MotifKind::*;
        let kinds = [
            Stripes {
                vertical: false,
                duty: 0.4,
            },
            Checks,
            Dots,
            Text,
            Graphic,
            Quirky,
            Funky,
            Floral,
            Paisley,
            Peacock,
            Elephant,
            Applique,
            Botanical,
            SmallBlock,
            Buttis,
            Lattice,
            ZariLines,
        ];
        for kind in kinds {
            let m = Motif::new(kind, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], 0.3, 3);
            let m = if matches!(kind, Text | Graphic) {
                m.in_region([-0.5, -0.4, 0.5, 0.4])
            } else {
                m
            };
            let c = coverage(&m);
            assert!(c > 0.02 && c < 0.8, "{kind:?} covers {c}");
        }
    }
}
