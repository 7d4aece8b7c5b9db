//! `trainer synth`: a synthetic garment data set in exactly the Meesho layout (see
//! [`crate::data`]), for building and testing everything without the real data.
//!
//! Every category and class of [`Taxonomy::meesho`] appears, drawn as a product photo
//! whose attributes are visible (colour and multicolour, sleeves, necks, prints,
//! lengths, fits, saree borders and pallus, sheer fabric); occasion and ornamentation
//! are correlated with visible cues ([`labels`]). Train labels are blanked at realistic
//! per-attribute rates; the test split is drawn with a controlled domain shift
//! ([`scene`]) and its full labels go to `test_labels.csv`, an extra file the Meesho
//! layout does not have, so that the shifted domain can be scored.
//!
//! Output is deterministic for a seed: image `index` of `category` in `split` is drawn
//! from its own stream seeded by `(seed, split, category, index)`, so the images are the
//! same however rayon schedules them. Ids are numbered per split, category after
//! category, as in the real files.

pub mod fabric;
pub mod garment;
pub mod labels;
pub mod raster;
pub mod scene;

use crate::data::csv::{write_labelled, write_test};
use crate::data::images::progress_bar;
use crate::data::parquet::write_category_attributes;
use crate::data::{
    image_file_name, CategoryAttributes, DataError, LabelledRow, TestRow, CATEGORY_PARQUET,
    TEST_CSV, TEST_IMAGES, TEST_LABELS_CSV, TRAIN_CSV, TRAIN_IMAGES,
};
use crate::rng::Rng;
use image::RgbImage;
use model_core::taxonomy::Taxonomy;
use rayon::prelude::*;
use scene::Domain;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub train_per_category: usize,
    pub test_per_category: usize,
    /// Side of the square images, in pixels.
    pub size: u32,
    pub seed: u64,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Where to save a PNG contact sheet of 30 images (with a `.txt` of their labels).
    pub contact_sheet: Option<PathBuf>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            train_per_category: 300,
            test_per_category: 100,
            size: 128,
            seed: 0,
            progress: false,
            contact_sheet: None,
        }
    }
}

/// The smallest image side the garments stay recognisable at.
pub const MIN_SIZE: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot encode: {message}", path.display())]
    Encode { path: PathBuf, message: String },
    #[error("image size {0} is too small (at least {MIN_SIZE} pixels)")]
    TooSmall(u32),
    #[error("category {0:?} has no synthetic garment")]
    UnknownCategory(String),
    #[error("{0}")]
    Label(String),
}

/// What a run made.
#[derive(Debug, Clone)]
pub struct SynthSummary {
    pub train_rows: usize,
    pub test_rows: usize,
    pub seconds: f64,
}

impl SynthSummary {
    pub fn images_per_second(&self) -> f64 {
        (self.train_rows + self.test_rows) as f64 / self.seconds.max(1e-9)
    }
}

/// One drawn garment.
pub struct Sample {
    pub category: usize,
    /// The true class of every attribute (indices into [`Taxonomy::meesho`]).
    pub labels: Vec<usize>,
    /// Which labels the training table leaves blank.
    pub blank: Vec<bool>,
    pub image: RgbImage,
    pub jpeg_quality: u8,
}

fn split_tag(domain: Domain) -> u64 {
    match domain {
        Domain::Train => 0,
        Domain::Test => 1,
    }
}

/// Draws image `index` of `category` for `domain`, from the stream seeded by
/// `(seed, split, category, index)`.
pub fn draw_sample(
    taxonomy: &Taxonomy,
    category: usize,
    domain: Domain,
    index: usize,
    size: u32,
    seed: u64,
) -> Result<Sample, SynthError> {
    let spec = &taxonomy.categories[category];
    let mut rng = Rng::derived(seed, &[split_tag(domain), category as u64, index as u64]);
    let sampled = labels::sample(&spec.name, &mut rng)
        .ok_or_else(|| SynthError::UnknownCategory(spec.name.clone()))?;
    let mut classes = Vec::with_capacity(spec.attributes.len());
    for (attr, (name, class)) in spec.attributes.iter().zip(&sampled.labels) {
        let index = (attr.name == *name)
            .then(|| attr.class_index(class))
            .flatten()
            .ok_or_else(|| {
                SynthError::Label(format!(
                    "{}: {name}={class:?} is not in the taxonomy",
                    spec.name
                ))
            })?;
        classes.push(index);
    }
    let blank = labels::blank_labels(labels::blank_rates(&spec.name), &mut rng);
    let (image, jpeg_quality) = scene::render(&sampled.look, size, domain, &mut rng);
    Ok(Sample {
        category,
        labels: classes,
        blank,
        image,
        jpeg_quality,
    })
}

fn encode_jpeg(image: &RgbImage, quality: u8, path: &Path) -> Result<Vec<u8>, SynthError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .map_err(|e| SynthError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(bytes)
}

struct Job {
    domain: Domain,
    category: usize,
    index: usize,
    id: u64,
}

/// How many images of each category and split go on the contact sheet.
const SHEET_TRAIN: usize = 4;
const SHEET_TEST: usize = 2;

/// Writes the data set to `out` (created if needed; existing files of the same names are
/// overwritten).
pub fn generate(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary, SynthError> {
    if cfg.size < MIN_SIZE {
        return Err(SynthError::TooSmall(cfg.size));
    }
    let start = Instant::now();
    let taxonomy = Taxonomy::meesho();
    for dir in [
        out.to_path_buf(),
        out.join(TRAIN_IMAGES),
        out.join(TEST_IMAGES),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| SynthError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let mut jobs = Vec::new();
    for (domain, per_category) in [
        (Domain::Train, cfg.train_per_category),
        (Domain::Test, cfg.test_per_category),
    ] {
        for category in 0..taxonomy.categories.len() {
            for index in 0..per_category {
                let id = (category * per_category + index) as u64;
                jobs.push(Job {
                    domain,
                    category,
                    index,
                    id,
                });
            }
        }
    }

    let bar = progress_bar(jobs.len() as u64, "synth", cfg.progress);
    let results: Vec<Result<(Sample, Option<RgbImage>), SynthError>> = jobs
        .par_iter()
        .map(|job| {
            let sample = draw_sample(
                &taxonomy,
                job.category,
                job.domain,
                job.index,
                cfg.size,
                cfg.seed,
            )?;
            let dir = out.join(if job.domain == Domain::Train {
                TRAIN_IMAGES
            } else {
                TEST_IMAGES
            });
            let path = dir.join(image_file_name(job.id));
            let bytes = encode_jpeg(&sample.image, sample.jpeg_quality, &path)?;
            std::fs::write(&path, &bytes).map_err(|source| SynthError::Io {
                path: path.clone(),
                source,
            })?;
            let on_sheet = match job.domain {
                Domain::Train => job.index < SHEET_TRAIN,
                Domain::Test => job.index < SHEET_TEST,
            };
            // The sheet shows what the reader will see: the saved JPEG, decoded.
            let sheet_image = if cfg.contact_sheet.is_some() && on_sheet {
                image::load_from_memory(&bytes).ok().map(|i| i.into_rgb8())
            } else {
                None
            };
            bar.inc(1);
            Ok((sample, sheet_image))
        })
        .collect();
    bar.finish_and_clear();

    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut test_labels = Vec::new();
    let mut sheet = Vec::new();
    for (job, result) in jobs.iter().zip(results) {
        let (sample, sheet_image) = result?;
        match job.domain {
            Domain::Train => train.push(LabelledRow {
                id: job.id,
                category: sample.category,
                labels: sample
                    .labels
                    .iter()
                    .zip(&sample.blank)
                    .map(|(&l, &b)| (!b).then_some(l))
                    .collect(),
            }),
            Domain::Test => {
                test.push(TestRow {
                    id: job.id,
                    category: sample.category,
                });
                test_labels.push(LabelledRow {
                    id: job.id,
                    category: sample.category,
                    labels: sample.labels.iter().map(|&l| Some(l)).collect(),
                });
            }
        }
        if let Some(image) = sheet_image {
            sheet.push((job, sample, image));
        }
    }
    write_labelled(&out.join(TRAIN_CSV), &taxonomy, &train, "")?;
    write_test(&out.join(TEST_CSV), &taxonomy, &test)?;
    write_labelled(&out.join(TEST_LABELS_CSV), &taxonomy, &test_labels, "")?;
    write_category_attributes(
        &out.join(CATEGORY_PARQUET),
        &CategoryAttributes::of(&taxonomy),
    )?;
    let provenance = serde_json::json!({
        "generator": "trainer synth",
        "seed": cfg.seed,
        "size": cfg.size,
        "train_per_category": cfg.train_per_category,
        "test_per_category": cfg.test_per_category,
    });
    let meta_path = out.join("synth.json");
    std::fs::write(&meta_path, format!("{provenance:#}\n")).map_err(|source| SynthError::Io {
        path: meta_path,
        source,
    })?;
    if let Some(path) = &cfg.contact_sheet {
        write_contact_sheet(path, &taxonomy, &sheet)?;
    }
    Ok(SynthSummary {
        train_rows: train.len(),
        test_rows: test.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Tiles the chosen images, one row per category (train images first, then test), and
/// writes their labels beside the PNG as `<path>.txt`.
fn write_contact_sheet(
    path: &Path,
    taxonomy: &Taxonomy,
    items: &[(&Job, Sample, RgbImage)],
) -> Result<(), SynthError> {
    let Some(first) = items.first() else {
        return Ok(());
    };
    let tile = first.2.width().max(128);
    let columns = (SHEET_TRAIN + SHEET_TEST) as u32;
    let rows = taxonomy.categories.len() as u32;
    let gap = 4;
    let mut sheet = RgbImage::from_pixel(
        columns * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        image::Rgb([40, 40, 40]),
    );
    let mut text = String::new();
    let mut slot = vec![0u32; taxonomy.categories.len()];
    for (job, sample, image) in items {
        let row = job.category as u32;
        let col = slot[job.category];
        slot[job.category] += 1;
        let scaled =
            image::imageops::resize(image, tile, tile, image::imageops::FilterType::Nearest);
        image::imageops::replace(
            &mut sheet,
            &scaled,
            (gap + col * (tile + gap)) as i64,
            (gap + row * (tile + gap)) as i64,
        );
        let spec = &taxonomy.categories[job.category];
        let labels: Vec<String> = spec
            .attributes
            .iter()
            .zip(&sample.labels)
            .zip(&sample.blank)
            .map(|((a, &l), &b)| {
                let blank = if b && job.domain == Domain::Train {
                    " (blank in csv)"
                } else {
                    ""
                };
                format!("{}={}{blank}", a.name, a.classes[l])
            })
            .collect();
        let split = if job.domain == Domain::Train {
            "train"
        } else {
            "test"
        };
        text.push_str(&format!(
            "row {row} col {col}: {split} id {} {}: {}\n",
            job.id,
            spec.name,
            labels.join(", ")
        ));
    }
    sheet.save(path).map_err(|e| SynthError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let text_path = path.with_extension("txt");
    std::fs::write(&text_path, text).map_err(|source| SynthError::Io {
        path: text_path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::TempDir;
    use crate::data::{Dataset, ImageOptions, TaxonomySource};

    fn tiny(seed: u64) -> SynthConfig {
        SynthConfig {
            train_per_category: 6,
            test_per_category: 2,
            size: 32,
            seed,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn synth_output_reads_back_with_no_skipped_row() {
        let dir = TempDir::new("synth_read_back");
        let summary = generate(dir.path(), &tiny(3)).unwrap();
        assert_eq!((summary.train_rows, summary.test_rows), (30, 10));
        let ds = Dataset::open(dir.path()).unwrap();
        assert!(matches!(ds.taxonomy_source, TaxonomySource::Parquet(_)));
        assert_eq!(
            ds.taxonomy.category_names(),
            Taxonomy::meesho().category_names()
        );
        let meesho = Taxonomy::meesho();
        for (c, m) in ds.taxonomy.categories.iter().zip(&meesho.categories) {
            let names: Vec<&str> = c.attributes.iter().map(|a| a.name.as_str()).collect();
            let expected: Vec<&str> = m.attributes.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, expected);
            for (a, ma) in c.attributes.iter().zip(&m.attributes) {
                // The data's classes, in the built-in order.
                let positions: Vec<usize> = a
                    .classes
                    .iter()
                    .map(|k| ma.class_index(k).expect("a built-in class"))
                    .collect();
                assert!(
                    positions.windows(2).all(|w| w[0] < w[1]),
                    "{}: {:?}",
                    a.name,
                    a.classes
                );
            }
        }
        assert_eq!(ds.train.len(), 30);
        assert_eq!(ds.test.len(), 10);
        assert_eq!(ds.test_labels.as_ref().map(Vec::len), Some(10));
        let report = dir.path().join("report.csv");
        let loaded = ds
            .load_images(&ImageOptions::in_memory(32), &report)
            .unwrap();
        assert_eq!(loaded.report.skipped("train"), 0);
        assert_eq!(loaded.report.skipped("test"), 0);
        assert_eq!(loaded.train.rows.len(), 30);
        assert_eq!(loaded.test.rows.len(), 10);
    }

    #[test]
    fn same_seed_same_files_other_seed_other_files() {
        let (a, b, c) = (
            TempDir::new("synth_a"),
            TempDir::new("synth_b"),
            TempDir::new("synth_c"),
        );
        generate(a.path(), &tiny(7)).unwrap();
        generate(b.path(), &tiny(7)).unwrap();
        generate(c.path(), &tiny(8)).unwrap();
        let read = |d: &TempDir, f: &str| std::fs::read(d.path().join(f)).unwrap();
        for f in [
            "train.csv",
            "test.csv",
            "test_labels.csv",
            "category_attributes.parquet",
            "train_images/000017.jpg",
            "test_images/000003.jpg",
        ] {
            assert_eq!(read(&a, f), read(&b, f), "{f}");
        }
        assert_ne!(
            read(&a, "train_images/000017.jpg"),
            read(&c, "train_images/000017.jpg")
        );
        assert_ne!(read(&a, "train.csv"), read(&c, "train.csv"));
    }

    #[test]
    fn images_do_not_depend_on_the_thread_count() {
        let taxonomy = Taxonomy::meesho();
        let draw = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (0..12usize)
                    .into_par_iter()
                    .map(|i| {
                        draw_sample(&taxonomy, i % 5, Domain::Test, i, 24, 9)
                            .unwrap()
                            .image
                            .into_raw()
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(draw(1), draw(3));
    }

    #[test]
    fn labels_are_blanked_in_train_only() {
        let taxonomy = Taxonomy::meesho();
        let sarees = 1;
        let n = 300;
        let blank_first = (0..n)
            .filter(|&i| {
                draw_sample(&taxonomy, sarees, Domain::Train, i, 16, 1)
                    .unwrap()
                    .blank[0]
            })
            .count();
        let share = blank_first as f32 / n as f32;
        assert!(
            (share - 0.57).abs() < 0.08,
            "Sarees blouse_pattern blank in {share} of rows"
        );
    }

    #[test]
    fn the_test_domain_is_shifted() {
        // Mean brightness of the border pixels (mostly background) differs by domain.
        let taxonomy = Taxonomy::meesho();
        let edge_mean = |domain: Domain| {
            let mut total = 0.0;
            for i in 0..20 {
                let s = draw_sample(&taxonomy, 0, domain, i, 32, 2).unwrap();
                let img = &s.image;
                let mut sum = 0.0;
                for x in 0..32 {
                    for y in [0, 31] {
                        sum += img.get_pixel(x, y).0.iter().map(|&v| v as f32).sum::<f32>() / 3.0;
                    }
                }
                total += sum / 64.0;
            }
            total / 20.0
        };
        let (train, test) = (edge_mean(Domain::Train), edge_mean(Domain::Test));
        assert!(
            train > 200.0 && test < train - 40.0,
            "train {train}, test {test}"
        );
    }

    #[test]
    fn contact_sheet_is_written() {
        let dir = TempDir::new("synth_sheet");
        let sheet = dir.path().join("sheet.png");
        let cfg = SynthConfig {
            contact_sheet: Some(sheet.clone()),
            ..tiny(1)
        };
        generate(&dir.path().join("data"), &cfg).unwrap();
        let img = image::open(&sheet).unwrap();
        assert_eq!((img.width(), img.height()), (6 * 132 + 4, 5 * 132 + 4));
        let text = std::fs::read_to_string(sheet.with_extension("txt")).unwrap();
        assert_eq!(text.lines().count(), 30);
    }
}
