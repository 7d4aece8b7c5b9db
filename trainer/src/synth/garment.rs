//! Garment geometry: a [`Look`] (what the labels say the garment looks like) becomes a
//! list of [`Part`]s, shapes in garment-local units with a paint function each.
//!
//! Local frame: x to the right, y down; the shoulder line of a top is at
//! [`SHOULDER_Y`]; a saree is laid flat as a folded sheet about 1.7 x 1.5 units. The
//! scene scales the parts' bounding box to the canvas, so lengths and fits are visible
//! as proportions (hem height against shoulder width), not as absolute sizes.

use super::fabric::Fabric;
use super::raster::{lerp, luma, scale, Rgb, Shape, P};
use std::f32::consts::PI;

/// y of the shoulder line (the top of the body) of tops, tees and kurtis.
pub const SHOULDER_Y: f32 = -0.7;
/// Half width of a neck opening.
const NECK_HALF: f32 = 0.16;
/// y of the armpits and the waist, below the shoulder line.
const ARMPIT_DROP: f32 = 0.32;
const WAIST_DROP: f32 = 0.75;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neck {
    Round,
    Polo,
    VNeck,
    Square,
    /// A high (mock or mandarin) collar band.
    High,
    Sweetheart,
    /// A round neck with a keyhole slit below (stylised).
    Keyhole,
    /// A wide shallow boat neck.
    Boat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleeveLen {
    None,
    Short,
    Elbow,
    ThreeQuarter,
    Long,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleeveStyle {
    Regular,
    Puff,
    /// Flared at the end.
    Bell,
    /// A turned-back band at the end.
    Cuffed,
}

/// Half widths at the shoulder, the armpits, the waist and the hem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Silhouette {
    pub shoulder: f32,
    pub chest: f32,
    pub waist: f32,
    pub hem: f32,
}

impl Silhouette {
    pub const REGULAR: Self = Self {
        shoulder: 0.42,
        chest: 0.38,
        waist: 0.37,
        hem: 0.39,
    };
    pub const LOOSE: Self = Self {
        shoulder: 0.5,
        chest: 0.47,
        waist: 0.48,
        hem: 0.53,
    };
    pub const BOXY: Self = Self {
        shoulder: 0.5,
        chest: 0.5,
        waist: 0.5,
        hem: 0.5,
    };
    pub const FITTED: Self = Self {
        shoulder: 0.37,
        chest: 0.34,
        waist: 0.26,
        hem: 0.33,
    };
    /// Fitted to the waist, then flared (a peplum).
    pub const PEPLUM: Self = Self {
        shoulder: 0.38,
        chest: 0.35,
        waist: 0.28,
        hem: 0.56,
    };
    pub const STRAIGHT: Self = Self {
        shoulder: 0.4,
        chest: 0.36,
        waist: 0.35,
        hem: 0.37,
    };
    pub const A_LINE: Self = Self {
        shoulder: 0.4,
        chest: 0.36,
        waist: 0.39,
        hem: 0.66,
    };
}

/// Decoration on the surface of a top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Plain,
    Ruffles,
    /// Strings tied at the neck.
    NeckTies,
    /// A bow at the waist.
    WaistTie,
    /// Sewn-on patches.
    Applique,
}

/// A top, a T-shirt or a kurti.
#[derive(Debug, Clone)]
pub struct TopLook {
    pub fabric: Fabric,
    pub neck: Neck,
    pub sleeve_len: SleeveLen,
    pub sleeve_style: SleeveStyle,
    pub silhouette: Silhouette,
    /// y of the hem (the shoulder line is at [`SHOULDER_Y`]).
    pub hem_y: f32,
    pub surface: Surface,
    /// Net (sheer mesh) yoke and sleeves.
    pub net: bool,
    /// Colour of ribbing, collar tips, ties and patches.
    pub trim: Rgb,
    /// Side slits at the hem (kurtis).
    pub slits: bool,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorderKind {
    /// Gold metallic thread.
    Zari,
    /// A woven geometric band.
    Woven,
    /// A row of temple-spire triangles.
    Temple,
    /// A plain band a shade darker than the body, with two thin lines.
    Plain,
    /// A band of one contrasting colour.
    Solid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PalluKind {
    Woven,
    Zari,
    SameAsSaree,
    /// A plain pallu a shade darker than the body.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlouseKind {
    SameAsSaree,
    SameAsBorder,
    Solid,
    /// Body colour with small dots.
    Dotted,
}

/// A saree laid out flat: body, pallu (the decorated end), borders along both long
/// edges, and the blouse piece.
#[derive(Debug, Clone)]
pub struct SareeLook {
    pub fabric: Fabric,
    /// Border kind and width in local units; `None` for no border.
    pub border: Option<(BorderKind, f32)>,
    pub border_colour: Rgb,
    pub border_accent: Rgb,
    pub pallu: PalluKind,
    pub blouse: BlouseKind,
    pub blouse_colour: Rgb,
    pub transparent: bool,
    pub tassels: bool,
}

#[derive(Debug, Clone)]
pub enum Look {
    Top(TopLook),
    Saree(SareeLook),
}

/// A painted region: `paint(local)` gives colour and opacity, or `None` to skip.
pub struct Part<'a> {
    pub shape: Shape,
    /// Parts with different ids get a seam where they meet.
    pub id: u8,
    pub paint: Box<dyn Fn(P) -> Option<(Rgb, f32)> + Sync + 'a>,
}

/// The soft light and shadow of cloth folds, a brightness factor near 1.
fn folds(p: P) -> f32 {
    1.0 - 0.05 * (p[0] * 5.0 + p[1] * 2.0).sin() * (p[1] * 3.0 + 1.0).cos()
}

/// A sheer mesh: thin opaque threads on a diagonal grid, mostly see-through between.
fn net_paint(colour: Rgb, p: P) -> (Rgb, f32) {
    let a = ((p[0] + p[1]) / 0.06).rem_euclid(1.0);
    let b = ((p[0] - p[1]) / 0.06).rem_euclid(1.0);
    if a < 0.2 || b < 0.2 {
        (scale(colour, 0.85), 1.0)
    } else {
        (colour, 0.3)
    }
}

impl Look {
    pub fn parts(&self) -> Vec<Part<'_>> {
        match self {
            Look::Top(t) => top_parts(t),
            Look::Saree(s) => saree_parts(s),
        }
    }
}

fn top_parts(t: &TopLook) -> Vec<Part<'_>> {
    let sy = SHOULDER_Y;
    let sil = t.silhouette;
    let (ay, wy) = (sy + ARMPIT_DROP, sy + WAIST_DROP);
    let yoke_bottom = ay + 0.1;
    let fabric = move |p: P, shade: f32| scale(t.fabric.at(p), folds(p) * shade);
    let mut parts: Vec<Part> = Vec::new();

    // Sleeves first: the body's edge then reads as the sleeve seam.
    let sleeve = sleeve_shapes(t);
    for shape in &sleeve.sleeve {
        for s in [shape.clone(), shape.mirrored()] {
            parts.push(Part {
                shape: s,
                id: 1,
                paint: Box::new(move |p| {
                    Some(if t.net {
                        net_paint(fabric(p, 0.95), p)
                    } else {
                        (fabric(p, 0.95), 1.0)
                    })
                }),
            });
        }
    }
    for shape in &sleeve.extras {
        for s in [shape.clone(), shape.mirrored()] {
            let gathers = t.sleeve_style == SleeveStyle::Puff;
            parts.push(Part {
                shape: s,
                id: 2,
                paint: Box::new(move |p| {
                    // Puffs show gathering lines; cuffs are a darker band.
                    let k = if gathers {
                        1.0 - 0.12 * ((p[0] * 60.0).sin() * 0.5 + 0.5)
                    } else {
                        0.8
                    };
                    Some((fabric(p, k), 1.0))
                }),
            });
        }
    }

    // The body outline, right half from the neck down, mirrored for the left.
    let mut right: Vec<P> = vec![[NECK_HALF, sy]];
    if t.sleeve_len == SleeveLen::None {
        let tip = NECK_HALF + 0.11;
        right.extend([
            [tip, sy + 0.02],
            [sil.chest - 0.07, ay - 0.1],
            [sil.chest, ay],
        ]);
    } else {
        right.extend([[sil.shoulder, sy + 0.07], [sil.chest, ay]]);
    }
    if t.hem_y > wy + 0.05 {
        right.push([sil.waist, wy]);
    }
    let hem_half = if t.hem_y > wy + 0.05 {
        sil.hem
    } else {
        // A crop top ends above the waist: its hem is as wide as the body there.
        sil.chest + (sil.waist - sil.chest) * ((t.hem_y - ay) / (wy - ay)).clamp(0.0, 1.0)
    };
    right.push([hem_half, t.hem_y]);
    let mut outline: Vec<P> = right.iter().rev().map(|p| [-p[0], p[1]]).collect();
    outline.extend(right.iter().copied());
    let net = t.net;
    parts.push(Part {
        shape: Shape::Poly(outline),
        id: 3,
        paint: Box::new(move |p| {
            if net && p[1] < yoke_bottom {
                return Some(net_paint(fabric(p, 1.0), p));
            }
            Some((fabric(p, 1.0), 1.0))
        }),
    });
    if net {
        // The seam where the net yoke meets the body, kept inside the body (the
        // narrower of its half widths at the chest, the waist and the hem).
        let half = sil.chest.min(sil.waist).min(hem_half) - 0.01;
        parts.push(Part {
            shape: Shape::rect(-half, yoke_bottom - 0.012, half, yoke_bottom + 0.012),
            id: 4,
            paint: Box::new(move |p| Some((fabric(p, 0.7), 1.0))),
        });
    }
    if t.slits {
        for side in [-1.0f32, 1.0] {
            let x = side * (hem_half - 0.04);
            parts.push(Part {
                shape: Shape::Capsule {
                    a: [x, t.hem_y - 0.22],
                    b: [x, t.hem_y],
                    r: 0.008,
                },
                id: 5,
                paint: Box::new(move |p| Some((fabric(p, 0.6), 1.0))),
            });
        }
    }

    neck_parts(t, &mut parts);
    surface_parts(t, hem_half, &mut parts);
    parts
}

struct SleeveShapes {
    sleeve: Vec<Shape>,
    extras: Vec<Shape>,
}

/// The right sleeve (the left is its mirror image) and its puff or cuff.
fn sleeve_shapes(t: &TopLook) -> SleeveShapes {
    let sil = t.silhouette;
    let (angle_deg, length, end_width) = match t.sleeve_len {
        SleeveLen::None => {
            return SleeveShapes {
                sleeve: vec![],
                extras: vec![],
            }
        }
        SleeveLen::Short => (30.0f32, 0.27, 0.27),
        SleeveLen::Elbow => (42.0, 0.45, 0.23),
        SleeveLen::ThreeQuarter => (55.0, 0.62, 0.19),
        SleeveLen::Long => (65.0, 0.84, 0.16),
    };
    let a = angle_deg.to_radians();
    let d = [a.cos(), a.sin()];
    let n = [-a.sin(), a.cos()];
    let s = [sil.shoulder, SHOULDER_Y + 0.07];
    let arm = [sil.chest, SHOULDER_Y + ARMPIT_DROP];
    let at = |p: P, along: f32, across: f32| {
        [
            p[0] + d[0] * along + n[0] * across,
            p[1] + d[1] * along + n[1] * across,
        ]
    };
    let (mut e1, mut width) = (at(s, length, 0.0), end_width);
    if t.sleeve_style == SleeveStyle::Bell {
        e1 = at(e1, 0.0, -0.07);
        width += 0.16;
    }
    let e2 = at(e1, 0.0, width);
    let sleeve = Shape::Poly(vec![s, e1, e2, arm]);
    let mut extras = Vec::new();
    match t.sleeve_style {
        SleeveStyle::Puff => extras.push(Shape::Ellipse {
            c: at(s, 0.12, 0.1),
            r: [0.17, 0.14],
            angle: a,
        }),
        SleeveStyle::Cuffed => {
            let back = |p: P| at(p, -0.08, 0.0);
            extras.push(Shape::Poly(vec![back(e1), e1, e2, back(e2)]));
        }
        SleeveStyle::Regular | SleeveStyle::Bell => {}
    }
    SleeveShapes {
        sleeve: vec![sleeve],
        extras,
    }
}

fn neck_parts<'a>(t: &'a TopLook, parts: &mut Vec<Part<'a>>) {
    let sy = SHOULDER_Y;
    let main = t.fabric.main_colour();
    // The garment's inside shows through the opening: darker, or lighter on a dark
    // garment so that the shape stays visible.
    let dark = luma(main) < 0.25;
    let inner = if dark {
        lerp(main, [0.8; 3], 0.35)
    } else {
        scale(main, 0.45)
    };
    let rib = if dark {
        lerp(main, [1.0; 3], 0.18)
    } else {
        scale(main, 0.78)
    };
    // The opening and a rib band around it, both kept below the shoulder line.
    let opening = |shape: Shape, grow: f32| -> [Shape; 2] {
        let bigger = match &shape {
            Shape::Ellipse { c, r, angle } => Shape::Ellipse {
                c: *c,
                r: [r[0] + grow, r[1] + grow],
                angle: *angle,
            },
            Shape::Poly(ps) => {
                let cx = ps.iter().map(|p| p[0]).sum::<f32>() / ps.len() as f32;
                let cy = ps.iter().map(|p| p[1]).sum::<f32>() / ps.len() as f32;
                Shape::Poly(
                    ps.iter()
                        .map(|p| {
                            let (dx, dy) = (p[0] - cx, p[1] - cy);
                            let len = dx.hypot(dy).max(1e-3);
                            [p[0] + dx / len * grow, p[1] + dy / len * grow]
                        })
                        .collect(),
                )
            }
            other => other.clone(),
        };
        [bigger, shape]
    };
    let below = move |p: P| p[1] >= sy;
    let mut add_opening = |shapes: [Shape; 2]| {
        let [band, hole] = shapes;
        parts.push(Part {
            shape: band,
            id: 6,
            paint: Box::new(move |p| below(p).then_some((rib, 1.0))),
        });
        parts.push(Part {
            shape: hole,
            id: 7,
            paint: Box::new(move |p| below(p).then_some((inner, 1.0))),
        });
    };
    let n = NECK_HALF;
    match t.neck {
        Neck::Round => add_opening(opening(
            Shape::Ellipse {
                c: [0.0, sy],
                r: [n, 0.14],
                angle: 0.0,
            },
            0.035,
        )),
        Neck::Boat => add_opening(opening(
            Shape::Ellipse {
                c: [0.0, sy],
                r: [0.3, 0.075],
                angle: 0.0,
            },
            0.03,
        )),
        Neck::VNeck => add_opening(opening(
            Shape::Poly(vec![[-n, sy - 0.01], [n, sy - 0.01], [0.0, sy + 0.38]]),
            0.035,
        )),
        Neck::Square => add_opening(opening(
            Shape::rect(-0.19, sy - 0.01, 0.19, sy + 0.24),
            0.035,
        )),
        Neck::Keyhole => {
            add_opening(opening(
                Shape::Ellipse {
                    c: [0.0, sy],
                    r: [0.14, 0.1],
                    angle: 0.0,
                },
                0.03,
            ));
            add_opening(opening(
                Shape::Ellipse {
                    c: [0.0, sy + 0.22],
                    r: [0.055, 0.1],
                    angle: 0.0,
                },
                0.025,
            ));
        }
        Neck::Sweetheart => {
            // A straight top edge and two rounded lobes meeting in a point at the centre.
            let (lobe_x, lobe_y, lobe_r) = (0.11, sy + 0.13, 0.11);
            let region = move |p: P, grow: f32| {
                let top = p[0].abs() < 0.22 + grow && p[1] >= sy - 0.01 && p[1] < lobe_y;
                let lobes = (p[0].abs() - lobe_x).hypot(p[1] - lobe_y) < lobe_r + grow;
                top || lobes
            };
            let area = Shape::rect(-0.27, sy - 0.01, 0.27, sy + 0.3);
            parts.push(Part {
                shape: area.clone(),
                id: 6,
                paint: Box::new(move |p| region(p, 0.035).then_some((rib, 1.0))),
            });
            parts.push(Part {
                shape: area,
                id: 7,
                paint: Box::new(move |p| region(p, 0.0).then_some((inner, 1.0))),
            });
        }
        Neck::High => {
            parts.push(Part {
                shape: Shape::rect(-n - 0.01, sy - 0.13, n + 0.01, sy + 0.03),
                id: 6,
                paint: Box::new(move |p| {
                    let ridge = ((p[1] - sy) / 0.04).rem_euclid(1.0) < 0.3;
                    Some((if ridge { rib } else { scale(main, 0.95) }, 1.0))
                }),
            });
        }
        Neck::Polo => {
            add_opening(opening(
                Shape::Ellipse {
                    c: [0.0, sy],
                    r: [0.12, 0.07],
                    angle: 0.0,
                },
                0.02,
            ));
            let trim = t.trim;
            parts.push(Part {
                shape: Shape::rect(-0.045, sy + 0.03, 0.045, sy + 0.36),
                id: 8,
                paint: Box::new(move |p| {
                    let button = [sy + 0.14, sy + 0.26]
                        .iter()
                        .any(|&by| p[0].hypot(p[1] - by) < 0.022);
                    Some((
                        if button {
                            [0.92, 0.92, 0.9]
                        } else {
                            fabric_like(t, p)
                        },
                        1.0,
                    ))
                }),
            });
            for flap in [
                Shape::Poly(vec![
                    [-0.005, sy + 0.08],
                    [-0.21, sy - 0.04],
                    [-0.25, sy + 0.15],
                    [-0.06, sy + 0.2],
                ]),
                Shape::Poly(vec![
                    [0.005, sy + 0.08],
                    [0.21, sy - 0.04],
                    [0.25, sy + 0.15],
                    [0.06, sy + 0.2],
                ]),
            ] {
                parts.push(Part {
                    shape: flap,
                    id: 9,
                    paint: Box::new(move |p| {
                        // Collar tipping in the trim colour along the collar's edge.
                        let tip = p[1] > sy + 0.12 && (p[1] - sy - 0.12) < 0.03;
                        Some((
                            if tip {
                                trim
                            } else {
                                scale(fabric_like(t, p), 1.05)
                            },
                            1.0,
                        ))
                    }),
                });
            }
        }
    }
}

fn fabric_like(t: &TopLook, p: P) -> Rgb {
    scale(t.fabric.at(p), folds(p))
}

fn surface_parts<'a>(t: &'a TopLook, hem_half: f32, parts: &mut Vec<Part<'a>>) {
    let sy = SHOULDER_Y;
    let wy = (sy + WAIST_DROP).min(t.hem_y - 0.1);
    let trim = t.trim;
    match t.surface {
        Surface::Plain => {}
        Surface::Ruffles => {
            // Two tiers of scallops along the hem.
            let n = ((2.0 * hem_half) / 0.12).ceil() as usize;
            for tier in 0..2 {
                let y = t.hem_y - 0.05 + tier as f32 * 0.06;
                for k in 0..=n {
                    let x = -hem_half + k as f32 * (2.0 * hem_half) / n as f32;
                    parts.push(Part {
                        shape: Shape::Ellipse {
                            c: [x, y],
                            r: [0.075, 0.06],
                            angle: 0.0,
                        },
                        id: 10 + tier as u8 + (k % 2) as u8 * 2,
                        paint: Box::new(move |p| {
                            let ridge = 1.0 - 0.15 * ((p[0] * 90.0).sin() * 0.5 + 0.5);
                            Some((scale(fabric_like(t, p), ridge), 1.0))
                        }),
                    });
                }
            }
        }
        Surface::NeckTies => {
            for side in [-1.0f32, 1.0] {
                let a = [side * 0.03, sy + 0.1];
                let b = [side * 0.1, sy + 0.48];
                parts.push(Part {
                    shape: Shape::Capsule { a, b, r: 0.016 },
                    id: 14,
                    paint: Box::new(move |_| Some((trim, 1.0))),
                });
                parts.push(Part {
                    shape: Shape::disc(b, 0.035),
                    id: 15,
                    paint: Box::new(move |_| Some((trim, 1.0))),
                });
            }
            parts.push(Part {
                shape: Shape::disc([0.0, sy + 0.1], 0.035),
                id: 15,
                paint: Box::new(move |_| Some((trim, 1.0))),
            });
        }
        Surface::WaistTie => {
            let c = [0.0, wy];
            parts.push(Part {
                shape: Shape::rect(
                    -t.silhouette.waist - 0.02,
                    wy - 0.03,
                    t.silhouette.waist + 0.02,
                    wy + 0.03,
                ),
                id: 16,
                paint: Box::new(move |_| Some((trim, 1.0))),
            });
            for side in [-1.0f32, 1.0] {
                parts.push(Part {
                    shape: Shape::Poly(vec![c, [side * 0.2, wy - 0.1], [side * 0.2, wy + 0.1]]),
                    id: 17,
                    paint: Box::new(move |_| Some((scale(trim, 0.9), 1.0))),
                });
                parts.push(Part {
                    shape: Shape::Capsule {
                        a: c,
                        b: [side * 0.08, wy + 0.3],
                        r: 0.022,
                    },
                    id: 18,
                    paint: Box::new(move |_| Some((trim, 1.0))),
                });
            }
            parts.push(Part {
                shape: Shape::disc(c, 0.04),
                id: 19,
                paint: Box::new(move |_| Some((scale(trim, 0.8), 1.0))),
            });
        }
        Surface::Applique => {
            // Two or three patches with stitched edges (the seam pass draws the stitches).
            let spots = [[-0.18, sy + 0.45], [0.17, sy + 0.6], [0.0, sy + 0.3]];
            let count = 2 + (t.seed % 2) as usize;
            for (k, c) in spots.iter().take(count).enumerate() {
                let colour = lerp(trim, [1.0, 1.0, 1.0], 0.15 * k as f32);
                let shape = if (t.seed >> (k + 3)) & 1 == 0 {
                    Shape::disc(*c, 0.1)
                } else {
                    star_polygon(*c, 0.13, 0.06)
                };
                parts.push(Part {
                    shape,
                    id: 20 + k as u8,
                    paint: Box::new(move |_| Some((colour, 1.0))),
                });
            }
        }
    }
}

fn star_polygon(c: P, r_out: f32, r_in: f32) -> Shape {
    Shape::Poly(
        (0..10)
            .map(|k| {
                let a = -PI / 2.0 + k as f32 * PI / 5.0;
                let r = if k % 2 == 0 { r_out } else { r_in };
                [c[0] + r * a.cos(), c[1] + r * a.sin()]
            })
            .collect(),
    )
}

/// Local extent of the saree.
const SAREE_X: [f32; 3] = [-0.8, 0.3, 0.85]; // left edge, body/pallu fold, pallu end
const SAREE_Y: [f32; 2] = [-0.75, 0.75];

fn saree_parts(s: &SareeLook) -> Vec<Part<'_>> {
    let [x0, xf, x1] = SAREE_X;
    let [y0, y1] = SAREE_Y;
    // A sheer saree lets 62% of what is behind it through; where its folds overlap
    // (the under-layer below) it is denser.
    let alpha = if s.transparent { 0.38 } else { 1.0 };
    let mut parts: Vec<Part> = Vec::new();
    let border_paint = move |p: P, t: f32| -> Rgb { border_colour(s, p, t) };

    let blouse_shape = Shape::Poly(vec![
        [-0.98, 0.3],
        [-0.5, 0.26],
        [-0.46, 0.92],
        [-0.94, 0.96],
    ]);
    let blouse = Part {
        shape: blouse_shape,
        id: 1,
        paint: Box::new(move |p| {
            let c = match s.blouse {
                BlouseKind::SameAsSaree => s.fabric.at(p),
                BlouseKind::SameAsBorder => border_paint(p, ((p[1] - 0.3) / 0.2).rem_euclid(1.0)),
                BlouseKind::Solid => s.blouse_colour,
                BlouseKind::Dotted => {
                    let (fx, fy) = (
                        (p[0] / 0.07).rem_euclid(1.0) - 0.5,
                        (p[1] / 0.07).rem_euclid(1.0) - 0.5,
                    );
                    if fx.hypot(fy) < 0.22 {
                        s.blouse_colour
                    } else {
                        scale(s.fabric.main_colour(), 0.9)
                    }
                }
            };
            Some((scale(c, folds(p)), 1.0))
        }),
    };
    // A sheer saree is drawn over its blouse piece, which then shows through it.
    let blouse_on_top = !s.transparent;
    let mut blouse = Some(blouse);
    if !blouse_on_top {
        parts.extend(blouse.take());
    }

    if s.transparent {
        // A fold of the drape lying under the body: seen through it as a denser band.
        parts.push(Part {
            shape: Shape::Poly(vec![
                [x0 + 0.1, y1 - 0.1],
                [x0 + 0.45, y1 - 0.1],
                [xf + 0.05, y0 + 0.1],
                [xf - 0.3, y0 + 0.1],
            ]),
            id: 8,
            paint: Box::new(move |p| Some((scale(s.fabric.at(p), 0.8), alpha))),
        });
    }
    // The body, with pleat shading.
    parts.push(Part {
        shape: Shape::rect(x0, y0, xf, y1),
        id: 2,
        paint: Box::new(move |p| {
            let pleat = 1.0 - 0.08 * (0.5 + 0.5 * (p[0] * 16.0).sin());
            Some((scale(s.fabric.at(p), pleat), alpha))
        }),
    });
    // The pallu.
    parts.push(Part {
        shape: Shape::rect(xf, y0, x1, y1),
        id: 3,
        paint: Box::new(move |p| {
            let body = s.fabric.main_colour();
            let c = match s.pallu {
                PalluKind::SameAsSaree => s.fabric.at(p),
                PalluKind::Plain => {
                    let line = ((p[0] - xf) - 0.06).abs() < 0.012;
                    scale(body, if line { 0.5 } else { 0.72 })
                }
                PalluKind::Zari => {
                    if ((p[0] - xf) / 0.09).rem_euclid(1.0) < 0.4 {
                        zari(p)
                    } else {
                        body
                    }
                }
                PalluKind::Woven => {
                    let (fx, fy) = (
                        (p[0] / 0.1).rem_euclid(1.0) - 0.5,
                        (p[1] / 0.1).rem_euclid(1.0) - 0.5,
                    );
                    let band = ((p[0] - xf) / 0.18).rem_euclid(1.0) < 0.15;
                    if band || ((fx.abs() + fy.abs()) - 0.3).abs() < 0.08 {
                        s.border_colour
                    } else {
                        body
                    }
                }
            };
            Some((scale(c, folds(p)), alpha))
        }),
    });
    // Borders along both long edges, opaque even on a sheer saree.
    if let Some((_, width)) = s.border {
        for (top, edge) in [(true, y0), (false, y1)] {
            let (ya, yb) = if top {
                (y0, y0 + width)
            } else {
                (y1 - width, y1)
            };
            parts.push(Part {
                shape: Shape::rect(x0, ya, x1, yb),
                id: if top { 4 } else { 5 },
                paint: Box::new(move |p| {
                    let t = ((p[1] - edge).abs() / width).clamp(0.0, 1.0);
                    Some((scale(border_paint(p, t), folds(p)), 1.0))
                }),
            });
        }
    }
    parts.extend(blouse.take());
    if s.tassels {
        let mut y = y0 + 0.08;
        while y < y1 - 0.05 {
            let (a, b) = ([x1 - 0.01, y], [x1 + 0.11, y + 0.03]);
            let colour = s.border_accent;
            parts.push(Part {
                shape: Shape::Capsule { a, b, r: 0.012 },
                id: 6,
                paint: Box::new(move |_| Some((colour, 1.0))),
            });
            parts.push(Part {
                shape: Shape::disc(b, 0.03),
                id: 7,
                paint: Box::new(move |_| Some((colour, 1.0))),
            });
            y += 0.13;
        }
    }
    parts
}

/// Metallic gold with a little shimmer.
fn zari(p: P) -> Rgb {
    let shimmer = 0.9 + 0.12 * ((p[0] * 40.0).sin() * (p[1] * 31.0).cos());
    scale([0.84, 0.68, 0.26], shimmer)
}

/// The border's colour at `p`; `t` runs from 0 at the saree's edge to 1 at the border's
/// inner side.
fn border_colour(s: &SareeLook, p: P, t: f32) -> Rgb {
    let Some((kind, width)) = s.border else {
        return s.fabric.main_colour();
    };
    match kind {
        BorderKind::Zari => {
            if (t - 0.15).abs() < 0.06 || (t - 0.85).abs() < 0.06 {
                [1.0, 0.92, 0.55]
            } else {
                zari(p)
            }
        }
        BorderKind::Solid => s.border_colour,
        BorderKind::Plain => {
            let line = (t - 0.25).abs() < 0.08 || (t - 0.75).abs() < 0.08;
            scale(s.fabric.main_colour(), if line { 1.15 } else { 0.65 })
        }
        BorderKind::Woven => {
            // Chevrons along the band.
            let u = (p[0] / (width * 1.2)).rem_euclid(1.0);
            let zig = ((u - 0.5).abs() * 2.0 - t).abs() < 0.22;
            if zig {
                s.border_accent
            } else {
                s.border_colour
            }
        }
        BorderKind::Temple => {
            // Spires pointing from the edge toward the body.
            let u = (p[0] / (width * 0.9)).rem_euclid(1.0);
            let spire = t > 0.15 && (1.0 - t) * 0.85 > (u - 0.5).abs() * 2.0 - 0.1;
            if spire {
                s.border_accent
            } else {
                s.border_colour
            }
        }
    }
}
