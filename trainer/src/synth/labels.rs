//! Drawing a garment's labels and turning them into a [`Look`].
//!
//! Each category has a small generative story: the attributes a photo cannot show
//! (occasion, ornamentation) are drawn first and tilt the odds of visible ones (wedding
//! sarees mostly have zari borders and big borders, party kurtis net yokes and sequins),
//! as in real catalogues. Attributes that must agree (pattern `solid` and print type
//! `solid`, sleeveless length and styling, `no border` and border width) are drawn
//! together. Every class of [`Taxonomy::meesho`](model_core::taxonomy::Taxonomy::meesho)
//! can be drawn and has a look of its own, `default` included: where the real data's
//! `default` is vague, it gets one consistent appearance here (for colours: any colour
//! that the category's list does not name).

use super::fabric::{contrasting, Base, BlockStyle, Fabric, Motif, MotifKind, Texture};
use super::garment::{
    BlouseKind, BorderKind, Look, Neck, PalluKind, SareeLook, Silhouette, SleeveLen, SleeveStyle,
    Surface, TopLook,
};
use super::raster::{luma, rgb, Rgb};
use crate::rng::Rng;

/// Named colours of the taxonomy.
const NAMED: [(&str, (u8, u8, u8)); 14] = [
    ("black", (30, 30, 33)),
    ("white", (244, 244, 241)),
    ("red", (205, 32, 40)),
    ("maroon", (118, 22, 42)),
    ("navy blue", (26, 36, 92)),
    ("blue", (40, 100, 210)),
    ("yellow", (240, 202, 40)),
    ("green", (40, 142, 64)),
    ("pink", (238, 128, 172)),
    ("purple", (120, 52, 152)),
    ("grey", (128, 128, 132)),
    ("orange", (242, 126, 32)),
    ("cream", (236, 222, 186)),
    ("peach", (250, 186, 156)),
];

/// Colours no category lists by name: a `default` colour is one of these or a named
/// colour outside the category's list.
const UNNAMED: [(u8, u8, u8); 8] = [
    (20, 128, 128),  // teal
    (122, 120, 42),  // olive
    (120, 74, 40),   // brown
    (210, 188, 148), // beige
    (180, 158, 222), // lavender
    (196, 154, 30),  // mustard
    (188, 40, 130),  // magenta
    (150, 212, 178), // mint
];

/// How far (RGB distance, 0..1 scale) a `default` colour stays from the named colours
/// of its category, so that it is not mistaken for one of them.
const DEFAULT_COLOUR_GAP: f32 = 0.3;

/// Colours for prints, borders and trims.
const ACCENTS: [(u8, u8, u8); 10] = [
    (20, 20, 24),
    (245, 245, 240),
    (200, 30, 45),
    (30, 60, 160),
    (240, 200, 40),
    (30, 130, 70),
    (235, 120, 160),
    (110, 40, 140),
    (240, 130, 30),
    (20, 120, 120),
];

/// A garment drawn for one category: its labels in attribute order and its look.
pub struct Sampled {
    /// `(attribute, class)` for every attribute of the category, in `attr_1..` order.
    pub labels: Vec<(&'static str, &'static str)>,
    pub look: Look,
}

/// The share of blank cells per attribute (in `attr_1..` order), approximating the
/// real data: sarees are sparsely labelled (`blouse_pattern` is blank in 57% of rows),
/// men's T-shirts densely. See [`blank_labels`] for how rows are blanked.
pub fn blank_rates(category: &str) -> &'static [f32] {
    match category {
        "Men Tshirts" => &[0.05, 0.08, 0.05, 0.08, 0.05],
        "Sarees" => &[0.57, 0.18, 0.28, 0.08, 0.30, 0.42, 0.36, 0.15, 0.22, 0.30],
        "Kurtis" => &[0.05, 0.12, 0.10, 0.20, 0.35, 0.12, 0.12, 0.08, 0.15],
        "Women Tshirts" => &[0.06, 0.18, 0.15, 0.10, 0.12, 0.10, 0.25, 0.45],
        "Women Tops & Tunics" => &[0.05, 0.20, 0.15, 0.25, 0.30, 0.10, 0.15, 0.08, 0.20, 0.50],
        _ => &[],
    }
}

/// Share of rows that are sparsely labelled (most cells blank); the rest are densely
/// labelled. Real catalogue rows tend to be one or the other.
const SPARSE_ROW_SHARE: f32 = 0.35;

/// Which labels of a row to blank, given the per-attribute rates: each row is sparse
/// (with [`SPARSE_ROW_SHARE`]) or dense, with per-row rates chosen so that the overall
/// blank share of each attribute is its rate.
pub fn blank_labels(rates: &[f32], rng: &mut Rng) -> Vec<bool> {
    let sparse = rng.chance(SPARSE_ROW_SHARE);
    rates
        .iter()
        .map(|&r| {
            let sparse_rate = (r * 2.2).min(1.0);
            let dense_rate =
                ((r - SPARSE_ROW_SHARE * sparse_rate) / (1.0 - SPARSE_ROW_SHARE)).max(0.0);
            rng.chance(if sparse { sparse_rate } else { dense_rate })
        })
        .collect()
}

fn choose(rng: &mut Rng, options: &[(&'static str, f32)]) -> &'static str {
    let weights: Vec<f32> = options.iter().map(|o| o.1).collect();
    options[rng.weighted(&weights)].0
}

fn jitter(c: Rgb, rng: &mut Rng) -> Rgb {
    let k = rng.range(0.94, 1.05);
    c.map(|v| ((v + rng.symmetric(0.025)) * k).clamp(0.0, 1.0))
}

fn named(name: &str) -> Option<Rgb> {
    NAMED
        .iter()
        .find(|n| n.0 == name)
        .map(|n| rgb(n.1 .0, n.1 .1, n.1 .2))
}

fn accent(rng: &mut Rng, against: Rgb) -> Rgb {
    let candidates: Vec<Rgb> = ACCENTS.iter().map(|c| rgb(c.0, c.1, c.2)).collect();
    contrasting(against, &candidates, rng.below(candidates.len()))
}

/// The base colour for a colour label, given the colour classes of the category.
fn base_colour(label: &str, category_colours: &[&str], rng: &mut Rng) -> Base {
    match label {
        "multicolor" => {
            let mut pool: Vec<Rgb> = NAMED
                .iter()
                .filter(|n| n.0 != "grey")
                .map(|n| rgb(n.1 .0, n.1 .1, n.1 .2))
                .collect();
            rng.shuffle(&mut pool);
            let n = 2 + rng.below(3);
            // Keep neighbouring blocks clearly different.
            let mut colours: Vec<Rgb> = Vec::new();
            for c in pool {
                if colours.iter().all(|k| dist(*k, c) > 0.35) {
                    colours.push(jitter(c, rng));
                }
                if colours.len() == n {
                    break;
                }
            }
            let style = *rng.pick(&[
                BlockStyle::Bands,
                BlockStyle::Diagonal,
                BlockStyle::Quarters,
                BlockStyle::Waves,
            ]);
            Base::Blocks {
                colours,
                style,
                size: rng.range(0.18, 0.4),
            }
        }
        "default" => {
            // Any colour clearly apart from every colour the category names.
            let listed: Vec<Rgb> = category_colours.iter().filter_map(|c| named(c)).collect();
            let pool: Vec<Rgb> = NAMED
                .iter()
                .filter(|n| !category_colours.contains(&n.0))
                .map(|n| rgb(n.1 .0, n.1 .1, n.1 .2))
                .chain(UNNAMED.iter().map(|c| rgb(c.0, c.1, c.2)))
                .filter(|c| listed.iter().all(|l| dist(*l, *c) > DEFAULT_COLOUR_GAP))
                .collect();
            Base::Solid(jitter(*rng.pick(&pool), rng))
        }
        name => Base::Solid(jitter(named(name).unwrap_or([0.5, 0.5, 0.5]), rng)),
    }
}

fn dist(a: Rgb, b: Rgb) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn main_of(base: &Base) -> Rgb {
    match base {
        Base::Solid(c) => *c,
        Base::Blocks { colours, .. } => colours[0],
    }
}

/// Chest box of a top, where typography and graphics go.
const CHEST: [f32; 4] = [-0.24, -0.5, 0.24, -0.08];

/// A print layer for a print type of the T-shirt and top categories.
fn top_print(kind: &str, base: Rgb, rng: &mut Rng) -> Vec<Motif> {
    let (c, a) = (accent(rng, base), accent(rng, base));
    let seed = rng.next_u64();
    let m = |k, period| Motif::new(k, c, a, period, seed);
    match kind {
        "typography" => vec![m(MotifKind::Text, 0.085).in_region(jitter_box(CHEST, rng, 0.05))],
        "graphic" => vec![m(MotifKind::Graphic, 0.0).in_region(jitter_box(CHEST, rng, 0.04))],
        "quirky" => vec![m(MotifKind::Quirky, rng.range(0.2, 0.26))],
        "funky print" => vec![Motif::new(
            MotifKind::Funky,
            c,
            accent(rng, c),
            rng.range(0.2, 0.28),
            seed,
        )],
        "floral" => vec![m(MotifKind::Floral, rng.range(0.2, 0.26))],
        "stripes" => vec![m(
            MotifKind::Stripes {
                vertical: false,
                duty: rng.range(0.3, 0.45),
            },
            rng.range(0.09, 0.15),
        )],
        "dots" => vec![m(MotifKind::Dots, rng.range(0.11, 0.15))],
        _ => vec![],
    }
}

fn jitter_box(b: [f32; 4], rng: &mut Rng, amount: f32) -> [f32; 4] {
    let (dx, dy) = (rng.symmetric(amount), rng.symmetric(amount));
    [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
}

/// Draws one garment of `category`; `None` for a category this generator does not know.
pub fn sample(category: &str, rng: &mut Rng) -> Option<Sampled> {
    Some(match category {
        "Men Tshirts" => men_tshirt(rng),
        "Sarees" => saree(rng),
        "Kurtis" => kurti(rng),
        "Women Tshirts" => women_tshirt(rng),
        "Women Tops & Tunics" => women_top(rng),
        _ => return None,
    })
}

struct TopParts {
    fabric: Fabric,
    trim: Rgb,
}

fn top_fabric(base: Base, motifs: Vec<Motif>, rng: &mut Rng) -> TopParts {
    let main = main_of(&base);
    let trim = accent(rng, main);
    TopParts {
        fabric: Fabric {
            base,
            texture: Texture::Plain,
            motifs,
            sparkle: false,
            seed: rng.next_u64(),
        },
        trim,
    }
}

fn men_tshirt(rng: &mut Rng) -> Sampled {
    let color = choose(
        rng,
        &[
            ("default", 0.35),
            ("multicolor", 0.15),
            ("white", 0.22),
            ("black", 0.28),
        ],
    );
    let neck = choose(rng, &[("round", 0.6), ("polo", 0.4)]);
    let printed_odds = if color == "multicolor" { 0.7 } else { 0.4 };
    let pattern = choose(
        rng,
        &[("solid", 1.0 - printed_odds), ("printed", printed_odds)],
    );
    let print = if pattern == "solid" {
        "solid"
    } else {
        choose(rng, &[("default", 0.5), ("typography", 0.5)])
    };
    let sleeve = choose(rng, &[("short sleeves", 0.75), ("long sleeves", 0.25)]);

    let base = base_colour(color, &["default", "multicolor", "white", "black"], rng);
    let main = main_of(&base);
    let motif_kind = match print {
        "default" if rng.chance(0.5) => "stripes",
        "default" => "graphic",
        other => other,
    };
    let motifs = top_print(motif_kind, main, rng);
    let p = top_fabric(base, motifs, rng);
    let look = TopLook {
        fabric: p.fabric,
        neck: if neck == "polo" {
            Neck::Polo
        } else {
            Neck::Round
        },
        sleeve_len: if sleeve == "long sleeves" {
            SleeveLen::Long
        } else {
            SleeveLen::Short
        },
        sleeve_style: SleeveStyle::Regular,
        silhouette: Silhouette::REGULAR,
        hem_y: 0.3 + rng.symmetric(0.04),
        surface: Surface::Plain,
        net: false,
        trim: p.trim,
        slits: false,
        seed: rng.next_u64(),
    };
    Sampled {
        labels: vec![
            ("color", color),
            ("neck", neck),
            ("pattern", pattern),
            ("print_or_pattern_type", print),
            ("sleeve_length", sleeve),
        ],
        look: Look::Top(look),
    }
}

fn women_tshirt(rng: &mut Rng) -> Sampled {
    let colours = [
        "white",
        "default",
        "black",
        "yellow",
        "multicolor",
        "pink",
        "maroon",
    ];
    let color = choose(
        rng,
        &[
            ("white", 0.2),
            ("default", 0.22),
            ("black", 0.2),
            ("yellow", 0.08),
            ("multicolor", 0.12),
            ("pink", 0.1),
            ("maroon", 0.08),
        ],
    );
    let fit = choose(rng, &[("regular", 0.5), ("loose", 0.3), ("boxy", 0.2)]);
    let length = choose(rng, &[("regular", 0.55), ("crop", 0.3), ("long", 0.15)]);
    let pattern = choose(rng, &[("printed", 0.45), ("default", 0.15), ("solid", 0.4)]);
    let print = match pattern {
        "solid" => "solid",
        "default" => choose(rng, &[("default", 0.85), ("graphic", 0.15)]),
        _ => choose(
            rng,
            &[
                ("typography", 0.3),
                ("funky print", 0.15),
                ("quirky", 0.2),
                ("graphic", 0.25),
                ("default", 0.1),
            ],
        ),
    };
    let sleeve_length = choose(
        rng,
        &[
            ("short sleeves", 0.7),
            ("long sleeves", 0.15),
            ("default", 0.15),
        ],
    );
    let sleeve_styling = choose(rng, &[("regular sleeves", 0.8), ("cuffed sleeves", 0.2)]);
    let surface = choose(rng, &[("default", 0.8), ("applique", 0.2)]);

    let base = base_colour(color, &colours, rng);
    let main = main_of(&base);
    let motifs = top_print(
        if print == "default" { "stripes" } else { print },
        main,
        rng,
    );
    let p = top_fabric(base, motifs, rng);
    let look = TopLook {
        fabric: p.fabric,
        neck: if rng.chance(0.8) {
            Neck::Round
        } else {
            Neck::VNeck
        },
        sleeve_len: match sleeve_length {
            "long sleeves" => SleeveLen::Long,
            "default" => SleeveLen::Elbow,
            _ => SleeveLen::Short,
        },
        sleeve_style: if sleeve_styling == "cuffed sleeves" {
            SleeveStyle::Cuffed
        } else {
            SleeveStyle::Regular
        },
        silhouette: match fit {
            "loose" => Silhouette::LOOSE,
            "boxy" => Silhouette::BOXY,
            _ => Silhouette::REGULAR,
        },
        hem_y: match length {
            "crop" => -0.12,
            "long" => 0.62,
            _ => 0.28,
        } + rng.symmetric(0.03),
        surface: if surface == "applique" {
            Surface::Applique
        } else {
            Surface::Plain
        },
        net: false,
        trim: p.trim,
        slits: false,
        seed: rng.next_u64(),
    };
    Sampled {
        labels: vec![
            ("color", color),
            ("fit_shape", fit),
            ("length", length),
            ("pattern", pattern),
            ("print_or_pattern_type", print),
            ("sleeve_length", sleeve_length),
            ("sleeve_styling", sleeve_styling),
            ("surface_styling", surface),
        ],
        look: Look::Top(look),
    }
}

fn women_top(rng: &mut Rng) -> Sampled {
    let colours = [
        "black",
        "white",
        "default",
        "pink",
        "blue",
        "yellow",
        "red",
        "maroon",
        "green",
        "multicolor",
        "navy blue",
        "peach",
    ];
    let occasion = choose(rng, &[("casual", 0.65), ("party", 0.35)]);
    let party = occasion == "party";
    let b = |casual: f32, party_w: f32| if party { party_w } else { casual };
    let color = choose(
        rng,
        &[
            ("black", b(0.08, 0.22)),
            ("white", b(0.14, 0.05)),
            ("default", b(0.1, 0.08)),
            ("pink", b(0.1, 0.08)),
            ("blue", b(0.09, 0.04)),
            ("yellow", b(0.09, 0.03)),
            ("red", b(0.06, 0.14)),
            ("maroon", b(0.04, 0.14)),
            ("green", b(0.08, 0.04)),
            ("multicolor", b(0.1, 0.05)),
            ("navy blue", b(0.05, 0.1)),
            ("peach", b(0.07, 0.03)),
        ],
    );
    let fit = choose(
        rng,
        &[
            ("fitted", 0.25),
            ("regular", 0.4),
            ("boxy", 0.2),
            ("default", 0.15),
        ],
    );
    let length = choose(rng, &[("regular", 0.75), ("crop", 0.25)]);
    let neck = choose(
        rng,
        &[
            ("round neck", 0.33),
            ("high", 0.1),
            ("square neck", 0.12),
            ("v-neck", 0.18),
            ("default", 0.1),
            ("sweetheart neck", b(0.05, 0.14)),
            ("stylised", 0.07),
        ],
    );
    let pattern = choose(
        rng,
        &[
            ("solid", b(0.45, 0.65)),
            ("printed", b(0.4, 0.22)),
            ("default", 0.15),
        ],
    );
    let print = match pattern {
        "solid" => "solid",
        "default" => "default",
        _ => choose(
            rng,
            &[
                ("typography", b(0.22, 0.05)),
                ("quirky", 0.2),
                ("graphic", 0.2),
                ("floral", 0.3),
                ("default", 0.1),
            ],
        ),
    };
    let sleeve_length = choose(
        rng,
        &[
            ("short", 0.4),
            ("long", 0.2),
            ("three-quarter", 0.15),
            ("sleeveless", b(0.2, 0.35)),
        ],
    );
    let sleeve_styling = if sleeve_length == "sleeveless" {
        "sleeveless"
    } else {
        let puff = if sleeve_length == "short" { 0.25 } else { 0.1 };
        choose(
            rng,
            &[
                ("regular sleeves", 0.7),
                ("puff sleeves", puff),
                ("default", 0.12),
            ],
        )
    };
    let surface = choose(
        rng,
        &[
            ("knitted", b(0.1, 0.03)),
            ("default", 0.55),
            ("ruffles", b(0.08, 0.18)),
            ("tie-ups", 0.08),
            ("waist tie-ups", 0.08),
            ("applique", 0.07),
        ],
    );

    let base = base_colour(color, &colours, rng);
    let main = main_of(&base);
    let motif = match print {
        "default" if rng.chance(0.5) => "stripes",
        "default" => "dots",
        other => other,
    };
    let motifs = top_print(motif, main, rng);
    let mut p = top_fabric(base, motifs, rng);
    if surface == "knitted" {
        p.fabric.texture = Texture::Knit;
    }
    p.fabric.sparkle = if party {
        rng.chance(0.5)
    } else {
        rng.chance(0.03)
    };
    let look = TopLook {
        fabric: p.fabric,
        neck: match neck {
            "high" => Neck::High,
            "square neck" => Neck::Square,
            "v-neck" => Neck::VNeck,
            "default" => Neck::Boat,
            "sweetheart neck" => Neck::Sweetheart,
            "stylised" => Neck::Keyhole,
            _ => Neck::Round,
        },
        sleeve_len: match sleeve_length {
            "long" => SleeveLen::Long,
            "three-quarter" => SleeveLen::ThreeQuarter,
            "sleeveless" => SleeveLen::None,
            _ => SleeveLen::Short,
        },
        sleeve_style: match sleeve_styling {
            "puff sleeves" => SleeveStyle::Puff,
            "default" => SleeveStyle::Bell,
            _ => SleeveStyle::Regular,
        },
        silhouette: match fit {
            "fitted" => Silhouette::FITTED,
            "boxy" => Silhouette::BOXY,
            "default" => Silhouette::PEPLUM,
            _ => Silhouette::REGULAR,
        },
        hem_y: if length == "crop" { -0.12 } else { 0.3 } + rng.symmetric(0.03),
        surface: match surface {
            "ruffles" => Surface::Ruffles,
            "tie-ups" => Surface::NeckTies,
            "waist tie-ups" => Surface::WaistTie,
            "applique" => Surface::Applique,
            _ => Surface::Plain,
        },
        net: false,
        trim: p.trim,
        slits: false,
        seed: rng.next_u64(),
    };
    Sampled {
        labels: vec![
            ("color", color),
            ("fit_shape", fit),
            ("length", length),
            ("neck_collar", neck),
            ("ocassion", occasion),
            ("pattern", pattern),
            ("print_or_pattern_type", print),
            ("sleeve_length", sleeve_length),
            ("sleeve_styling", sleeve_styling),
            ("surface_styling", surface),
        ],
        look: Look::Top(look),
    }
}

fn kurti(rng: &mut Rng) -> Sampled {
    let colours = [
        "black",
        "red",
        "maroon",
        "navy blue",
        "blue",
        "multicolor",
        "yellow",
        "green",
        "pink",
        "purple",
        "grey",
        "white",
        "orange",
    ];
    let occasion = choose(rng, &[("daily", 0.7), ("party", 0.3)]);
    let party = occasion == "party";
    let b = |daily: f32, party_w: f32| if party { party_w } else { daily };
    let color = choose(
        rng,
        &[
            ("black", b(0.06, 0.16)),
            ("red", b(0.07, 0.1)),
            ("maroon", b(0.05, 0.16)),
            ("navy blue", b(0.08, 0.12)),
            ("blue", b(0.1, 0.05)),
            ("multicolor", b(0.1, 0.06)),
            ("yellow", b(0.1, 0.04)),
            ("green", b(0.09, 0.06)),
            ("pink", b(0.1, 0.08)),
            ("purple", b(0.05, 0.09)),
            ("grey", b(0.05, 0.02)),
            ("white", b(0.09, 0.03)),
            ("orange", b(0.06, 0.03)),
        ],
    );
    let fit = choose(rng, &[("a-line", 0.45), ("straight", 0.55)]);
    let length = choose(rng, &[("knee length", 0.45), ("calf length", 0.55)]);
    let ornamentation = choose(rng, &[("net", b(0.1, 0.6)), ("default", b(0.9, 0.4))]);
    let pattern = choose(rng, &[("default", b(0.6, 0.3)), ("solid", b(0.4, 0.7))]);
    let print = pattern; // the two agree for kurtis: default is printed, solid is plain
    let sleeve_length = choose(
        rng,
        &[
            ("three-quarter sleeves", 0.5),
            ("short sleeves", 0.3),
            ("sleeveless", 0.2),
        ],
    );
    let sleeve_styling = if sleeve_length == "sleeveless" {
        "sleeveless"
    } else {
        "regular"
    };

    let base = base_colour(color, &colours, rng);
    let main = main_of(&base);
    let motifs = if print == "default" {
        let (c, a) = (accent(rng, main), accent(rng, main));
        let seed = rng.next_u64();
        match rng.below(3) {
            0 => vec![Motif::new(
                MotifKind::SmallBlock,
                c,
                a,
                rng.range(0.13, 0.17),
                seed,
            )],
            1 => vec![Motif::new(MotifKind::Floral, c, a, rng.range(0.18, 0.24), seed).sized(0.9)],
            _ => vec![Motif::new(MotifKind::Buttis, c, a, rng.range(0.14, 0.18), seed).sized(1.4)],
        }
    } else {
        vec![]
    };
    let mut p = top_fabric(base, motifs, rng);
    p.fabric.sparkle = party && rng.chance(0.4);
    let look = TopLook {
        fabric: p.fabric,
        neck: *rng.pick(&[Neck::Round, Neck::VNeck, Neck::High, Neck::Keyhole]),
        sleeve_len: match sleeve_length {
            "short sleeves" => SleeveLen::Short,
            "sleeveless" => SleeveLen::None,
            _ => SleeveLen::ThreeQuarter,
        },
        sleeve_style: SleeveStyle::Regular,
        silhouette: if fit == "a-line" {
            Silhouette::A_LINE
        } else {
            Silhouette::STRAIGHT
        },
        hem_y: if length == "knee length" { 0.72 } else { 1.2 } + rng.symmetric(0.04),
        surface: Surface::Plain,
        net: ornamentation == "net",
        trim: p.trim,
        slits: fit == "straight" && rng.chance(0.6),
        seed: rng.next_u64(),
    };
    Sampled {
        labels: vec![
            ("color", color),
            ("fit_shape", fit),
            ("length", length),
            ("occasion", occasion),
            ("ornamentation", ornamentation),
            ("pattern", pattern),
            ("print_or_pattern_type", print),
            ("sleeve_length", sleeve_length),
            ("sleeve_styling", sleeve_styling),
        ],
        look: Look::Top(look),
    }
}

fn saree(rng: &mut Rng) -> Sampled {
    let colours = [
        "multicolor",
        "cream",
        "default",
        "white",
        "navy blue",
        "pink",
        "yellow",
        "green",
    ];
    let occasion = choose(
        rng,
        &[
            ("party", 0.25),
            ("traditional", 0.3),
            ("daily", 0.3),
            ("wedding", 0.15),
        ],
    );
    let w = |party: f32, traditional: f32, daily: f32, wedding: f32| match occasion {
        "party" => party,
        "traditional" => traditional,
        "daily" => daily,
        _ => wedding,
    };
    let transparency = choose(
        rng,
        &[
            ("no", w(0.4, 0.85, 0.85, 0.75)),
            ("yes", w(0.6, 0.15, 0.15, 0.25)),
        ],
    );
    let color = choose(
        rng,
        &[
            ("multicolor", w(0.1, 0.08, 0.15, 0.15)),
            ("cream", w(0.05, 0.25, 0.1, 0.08)),
            ("default", w(0.2, 0.12, 0.1, 0.35)),
            ("white", w(0.05, 0.2, 0.1, 0.02)),
            ("navy blue", w(0.2, 0.05, 0.1, 0.05)),
            ("pink", w(0.2, 0.1, 0.15, 0.3)),
            ("yellow", w(0.08, 0.1, 0.15, 0.03)),
            ("green", w(0.12, 0.1, 0.15, 0.02)),
        ],
    );
    let border = choose(
        rng,
        &[
            ("zari", w(0.15, 0.2, 0.03, 0.6)),
            ("woven design", w(0.1, 0.3, 0.1, 0.15)),
            ("temple border", w(0.05, 0.35, 0.05, 0.15)),
            ("default", w(0.2, 0.05, 0.25, 0.05)),
            ("solid", w(0.25, 0.1, 0.3, 0.05)),
            ("no border", w(0.3, 0.02, 0.3, 0.01)),
        ],
    );
    let border_width = if border == "no border" {
        "no border"
    } else {
        let big = w(0.3, 0.5, 0.25, 0.75);
        choose(rng, &[("small border", 1.0 - big), ("big border", big)])
    };
    let pattern = choose(
        rng,
        &[
            ("zari woven", w(0.1, 0.25, 0.02, 0.5)),
            ("solid", w(0.45, 0.15, 0.2, 0.1)),
            ("woven design", w(0.1, 0.35, 0.1, 0.25)),
            ("default", w(0.1, 0.1, 0.13, 0.05)),
            ("printed", w(0.25, 0.15, 0.55, 0.1)),
        ],
    );
    let print = match pattern {
        "solid" => "solid",
        "printed" => choose(
            rng,
            &[
                ("floral", 0.22),
                ("ethnic motif", 0.15),
                ("peacock", 0.08),
                ("elephant", 0.08),
                ("applique", 0.1),
                ("checked", 0.15),
                ("botanical", 0.15),
                ("default", 0.1),
            ],
        ),
        "default" => choose(
            rng,
            &[("default", 0.7), ("floral", 0.15), ("ethnic motif", 0.15)],
        ),
        _ => choose(
            rng,
            &[
                ("ethnic motif", 0.35),
                ("peacock", 0.2),
                ("elephant", 0.15),
                ("floral", 0.15),
                ("default", 0.15),
            ],
        ),
    };
    let ornamentation = choose(
        rng,
        &[
            ("jacquard", w(0.1, 0.35, 0.05, 0.3)),
            ("default", w(0.6, 0.5, 0.85, 0.4)),
            ("tassels and latkans", w(0.3, 0.15, 0.1, 0.3)),
        ],
    );
    let pallu = choose(
        rng,
        &[
            ("woven design", w(0.2, 0.4, 0.1, 0.2)),
            (
                "zari woven",
                if pattern == "zari woven" {
                    1.5
                } else {
                    w(0.15, 0.2, 0.05, 0.5)
                },
            ),
            ("same as saree", w(0.35, 0.2, 0.5, 0.15)),
            ("default", w(0.3, 0.2, 0.35, 0.15)),
        ],
    );
    let blouse = choose(
        rng,
        &[
            ("same as saree", 0.3),
            (
                "same as border",
                if border == "no border" { 0.0 } else { 0.25 },
            ),
            ("default", 0.2),
            ("solid", 0.25),
        ],
    );

    let base = base_colour(color, &colours, rng);
    let main = main_of(&base);
    let border_colour = accent(rng, main);
    let border_accent = if border == "zari" {
        rgb(214, 172, 66)
    } else {
        accent(rng, border_colour)
    };
    let motif_kind = match print {
        "floral" => Some(MotifKind::Floral),
        "ethnic motif" => Some(MotifKind::Paisley),
        "peacock" => Some(MotifKind::Peacock),
        "elephant" => Some(MotifKind::Elephant),
        "applique" => Some(MotifKind::Applique),
        "checked" => Some(MotifKind::Checks),
        "botanical" => Some(MotifKind::Botanical),
        "default" => Some(MotifKind::Buttis),
        _ => None,
    };
    let seed = rng.next_u64();
    let mut motifs = Vec::new();
    if let Some(kind) = motif_kind {
        let gold = rgb(214, 172, 66);
        // The pattern decides how the motif is made: gold thread, tone-on-tone weave,
        // coloured print, or small and sparse.
        let (colour, accent_c, period, size) = match pattern {
            "zari woven" => (gold, rgb(250, 226, 140), 0.28, 1.0),
            "woven design" => {
                let tone = if luma(main) > 0.5 { 0.62 } else { 1.6 };
                (
                    main.map(|v| (v * tone).min(1.0)),
                    main.map(|v| (v * tone * 0.8).min(1.0)),
                    0.28,
                    1.0,
                )
            }
            "default" => (accent(rng, main), accent(rng, main), 0.3, 0.65),
            _ => {
                let c = accent(rng, main);
                (c, accent(rng, c), 0.3, 1.0)
            }
        };
        let period = if kind == MotifKind::Applique {
            0.45
        } else {
            period
        };
        motifs.push(Motif::new(kind, colour, accent_c, period, seed).sized(size));
        if pattern == "zari woven" {
            motifs.push(Motif::new(MotifKind::ZariLines, gold, gold, 0.2, seed ^ 1).sized(0.6));
        }
    }
    let fabric = Fabric {
        base,
        texture: if ornamentation == "jacquard" {
            Texture::Jacquard
        } else {
            Texture::Plain
        },
        motifs,
        sparkle: occasion == "party" && rng.chance(0.4),
        seed: rng.next_u64(),
    };
    let width = match border_width {
        "big border" => rng.range(0.17, 0.22),
        _ => rng.range(0.05, 0.075),
    };
    let look = SareeLook {
        fabric,
        border: match border {
            "zari" => Some((BorderKind::Zari, width)),
            "woven design" => Some((BorderKind::Woven, width)),
            "temple border" => Some((BorderKind::Temple, width)),
            "default" => Some((BorderKind::Plain, width)),
            "solid" => Some((BorderKind::Solid, width)),
            _ => None,
        },
        border_colour,
        border_accent,
        pallu: match pallu {
            "woven design" => PalluKind::Woven,
            "zari woven" => PalluKind::Zari,
            "same as saree" => PalluKind::SameAsSaree,
            _ => PalluKind::Plain,
        },
        blouse: match blouse {
            "same as saree" => BlouseKind::SameAsSaree,
            "same as border" => BlouseKind::SameAsBorder,
            "solid" => BlouseKind::Solid,
            _ => BlouseKind::Dotted,
        },
        blouse_colour: accent(rng, main),
        transparent: transparency == "yes",
        tassels: ornamentation == "tassels and latkans",
    };
    Sampled {
        labels: vec![
            ("blouse_pattern", blouse),
            ("border", border),
            ("border_width", border_width),
            ("color", color),
            ("occasion", occasion),
            ("ornamentation", ornamentation),
            ("pallu_details", pallu),
            ("pattern", pattern),
            ("print_or_pattern_type", print),
            ("transparency", transparency),
        ],
        look: Look::Saree(look),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_core::taxonomy::Taxonomy;

    #[test]
    fn every_label_is_a_class_and_every_class_can_be_drawn() {
        let taxonomy = Taxonomy::meesho();
        let mut rng = Rng::new(11);
        for category in &taxonomy.categories {
            assert_eq!(
                blank_rates(&category.name).len(),
                category.attributes.len(),
                "{}",
                category.name
            );
            let mut seen: Vec<Vec<bool>> = category
                .attributes
                .iter()
                .map(|a| vec![false; a.classes.len()])
                .collect();
            for _ in 0..4000 {
                let s = sample(&category.name, &mut rng).expect("known category");
                assert_eq!(s.labels.len(), category.attributes.len());
                for (k, (attr, class)) in s.labels.iter().enumerate() {
                    let spec = &category.attributes[k];
                    assert_eq!(&spec.name, attr, "{}: attribute order", category.name);
                    let i = spec
                        .class_index(class)
                        .unwrap_or_else(|| panic!("{}: {attr}={class:?}", category.name));
                    seen[k][i] = true;
                }
            }
            for (k, spec) in category.attributes.iter().enumerate() {
                for (i, class) in spec.classes.iter().enumerate() {
                    assert!(
                        seen[k][i],
                        "{} / {}: class {class:?} never drawn",
                        category.name, spec.name
                    );
                }
            }
        }
    }

    #[test]
    fn blanking_matches_the_rates() {
        let rates = blank_rates("Sarees");
        let mut rng = Rng::new(5);
        let n = 20_000;
        let mut counts = vec![0usize; rates.len()];
        for _ in 0..n {
            for (k, b) in blank_labels(rates, &mut rng).into_iter().enumerate() {
                counts[k] += b as usize;
            }
        }
        for (k, &r) in rates.iter().enumerate() {
            let got = counts[k] as f32 / n as f32;
            assert!((got - r).abs() < 0.02, "attribute {k}: {got} vs {r}");
        }
    }
}
