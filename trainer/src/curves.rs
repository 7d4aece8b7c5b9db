//! `RUN/curves.png`: training loss and validation score per epoch, one line per
//! category and stage, drawn from `train_log.jsonl`.

use crate::train::EpochLog;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Fonts tried for the labels; without one the plot is drawn without text.
const FONT_FILES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> bool {
    use std::sync::OnceLock;
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_FILES {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Reads the log and draws the two panels side by side.
pub fn draw(log: &Path, out: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("{}: cannot read", log.display()))?;
    let entries: Vec<EpochLog> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", log.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    if entries.is_empty() {
        return Ok(());
    }
    let with_text = register_font();
    // One series per category; x is the epoch counted across stages.
    let mut series: Vec<(String, Vec<(f64, f64, f64)>)> = Vec::new();
    for e in &entries {
        let idx = match series.iter().position(|(n, _)| *n == e.category) {
            Some(i) => i,
            None => {
                series.push((e.category.clone(), Vec::new()));
                series.len() - 1
            }
        };
        let x = series[idx].1.len() as f64 + 1.0;
        series[idx].1.push((x, e.loss, e.val_score));
    }
    let max_x = series.iter().map(|(_, p)| p.len()).max().unwrap_or(1) as f64;
    let max_loss = entries
        .iter()
        .map(|e| e.loss)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;

    let root = BitMapBackend::new(out, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let panels = [
        (left, "training loss", max_loss, 1usize),
        (right, "validation score", 1.0, 2usize),
    ];
    for (area, title, top, column) in panels {
        let mut builder = ChartBuilder::on(&area);
        builder
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(50);
        if with_text {
            builder.caption(title, ("sans-serif", 20));
        }
        let mut chart = builder.build_cartesian_2d(1.0..max_x.max(2.0), 0.0..top)?;
        let mut mesh = chart.configure_mesh();
        if with_text {
            mesh.x_desc("epoch");
        } else {
            mesh.disable_x_mesh().disable_y_mesh();
        }
        mesh.draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let line = chart.draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.0, if column == 1 { p.1 } else { p.2 })),
                color.stroke_width(2),
            ))?;
            if with_text {
                line.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
        if with_text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
