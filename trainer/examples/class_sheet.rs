//! Tiles a data set's images by class, one row per class of one attribute, to check by
//! eye that the classes look different:
//!
//! ```text
//! cargo run -p trainer --example class_sheet -- DATA_DIR "Sarees" border /tmp/border.png [per_class]
//! ```
//!
//! Uses `test_labels.csv` and `test_images/` when the data set has them (full labels),
//! otherwise `train.csv` and `train_images/`.

use image::RgbImage;
use trainer::data::{image_file_name, Dataset, TEST_IMAGES, TRAIN_IMAGES};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: class_sheet DATA_DIR CATEGORY ATTRIBUTE OUT.png [PER_CLASS]"
    );
    let (dir, category, attribute, out) = (&args[1], &args[2], &args[3], &args[4]);
    let per_class: usize = args.get(5).map_or(Ok(8), |s| s.parse())?;
    let dataset = Dataset::open(dir)?;
    let c = dataset
        .taxonomy
        .categories
        .iter()
        .position(|c| &c.name == category)
        .ok_or_else(|| anyhow::anyhow!("no category {category:?}"))?;
    let spec = &dataset.taxonomy.categories[c];
    let a = spec
        .attributes
        .iter()
        .position(|x| &x.name == attribute)
        .ok_or_else(|| anyhow::anyhow!("no attribute {attribute:?}"))?;
    let (rows, images) = match &dataset.test_labels {
        Some(rows) => (rows.clone(), TEST_IMAGES),
        None => (dataset.train.clone(), TRAIN_IMAGES),
    };
    let classes = &spec.attributes[a].classes;
    let tile = 128u32;
    let mut sheet = RgbImage::from_pixel(
        per_class as u32 * tile,
        classes.len() as u32 * tile,
        image::Rgb([40, 40, 40]),
    );
    for (k, class) in classes.iter().enumerate() {
        let ids: Vec<u64> = rows
            .iter()
            .filter(|r| r.category == c && r.labels[a] == Some(k))
            .map(|r| r.id)
            .take(per_class)
            .collect();
        println!("row {k}: {class} ({} shown)", ids.len());
        for (j, id) in ids.iter().enumerate() {
            let img = image::open(
                std::path::Path::new(dir)
                    .join(images)
                    .join(image_file_name(*id)),
            )?
            .into_rgb8();
            let img =
                image::imageops::resize(&img, tile, tile, image::imageops::FilterType::Triangle);
            image::imageops::replace(
                &mut sheet,
                &img,
                (j as u32 * tile) as i64,
                (k as u32 * tile) as i64,
            );
        }
    }
    sheet.save(out)?;
    Ok(())
}
