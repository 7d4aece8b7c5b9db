//! Estimates the best score any model could reach on the synthetic data, from the labels
//! alone: the generator draws some attributes (occasion, ornamentation, ...) that a photo
//! does not show, and only tilts the odds of visible ones. For every attribute this
//! predicts the most frequent class given all the *other* labels of the row (a lookup
//! table fitted on one sample, scored on another), which is what a perfect eye for the
//! visible attributes could infer. Attributes that the picture shows directly reach
//! about 1.0 in a real model; the table shows how far the hidden ones cap the score.
//!
//! ```text
//! cargo run --release -p trainer --example label_ceiling -- [rows_per_category]
//! ```

use model_core::metrics::{attribute_score, category_score, overall_score};
use std::collections::HashMap;
use trainer::rng::Rng;
use trainer::synth::labels::sample;

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::args().nth(1).map_or(Ok(200_000), |s| s.parse())?;
    let taxonomy = model_core::taxonomy::Taxonomy::meesho();
    let mut categories = Vec::new();
    for (ci, spec) in taxonomy.categories.iter().enumerate() {
        let draw = |seed: u64| -> Vec<Vec<&'static str>> {
            let mut rng = Rng::derived(seed, &[ci as u64]);
            (0..rows)
                .map(|_| {
                    let s = sample(&spec.name, &mut rng).expect("every category has a story");
                    s.labels.iter().map(|l| l.1).collect()
                })
                .collect()
        };
        let (fit, held_out) = (draw(1), draw(2));
        let mut attributes = Vec::new();
        for (ai, attr) in spec.attributes.iter().enumerate() {
            // Context = every other label of the row.
            let context = |row: &[&'static str]| -> Vec<&'static str> {
                row.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != ai)
                    .map(|(_, v)| *v)
                    .collect()
            };
            let mut table: HashMap<Vec<&str>, HashMap<&str, usize>> = HashMap::new();
            for row in &fit {
                *table
                    .entry(context(row))
                    .or_default()
                    .entry(row[ai])
                    .or_default() += 1;
            }
            let class = |name: &str| attr.classes.iter().position(|c| c == name);
            let mut truth = Vec::new();
            let mut pred = Vec::new();
            for row in &held_out {
                let guess = table
                    .get(&context(row))
                    .and_then(|counts| counts.iter().max_by_key(|(k, n)| (**n, **k)))
                    .map_or(attr.classes[0].as_str(), |(k, _)| *k);
                truth.push(class(row[ai]));
                pred.push(class(guess).unwrap_or(0));
            }
            attributes.push(attribute_score(&attr.name, &truth, &pred)?);
        }
        categories.push(category_score(&spec.name, attributes));
    }
    println!("score of the best guess of each attribute from the row's other labels");
    println!("({rows} rows per category to fit, as many to score)\n");
    for c in &categories {
        println!("{:<22} {:.4}", c.name, c.score);
        for a in &c.attributes {
            println!("    {:<24} {:.4}", a.name, a.harmonic);
        }
    }
    println!("\noverall {:.4}", overall_score(categories).score);
    Ok(())
}
