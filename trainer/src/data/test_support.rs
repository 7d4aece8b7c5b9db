//! Helpers for the unit tests: a temporary folder and a tiny hand-written data set.

use super::parquet::write_category_attributes;
use super::CategoryAttributes;
use model_core::taxonomy::Taxonomy;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under the system temp folder, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("trainer-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp folder");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const HEADER: &str =
    "id,Category,len,attr_1,attr_2,attr_3,attr_4,attr_5,attr_6,attr_7,attr_8,attr_9,attr_10";

/// Five training rows by hand: blank cells, `default`, and a colour (`teal`) that the
/// built-in taxonomy does not list.
pub const TRAIN_ROWS: &str = "\
0,Men Tshirts,5,black,round,solid,solid,short sleeves,,,,,
1,Men Tshirts,5,default,polo,printed,typography,long sleeves,,,,,
2,Men Tshirts,5,,round,printed,default,,,,,,
3,Kurtis,9,red,a-line,knee length,daily,net,solid,solid,short sleeves,regular,
4,Kurtis,9,teal,straight,,party,default,default,default,sleeveless,sleeveless,
";

pub const TEST_CSV: &str = "id,Category\n0,Kurtis\n1,Men Tshirts\n";

/// A small JPEG (not square, so that resizing does something).
pub fn jpeg(colour: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([colour[0], colour[1].wrapping_add((x + y) as u8), colour[2]])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&img)
        .expect("encode a JPEG");
    bytes
}

/// Writes the tiny data set (train rows 0-4, test rows 0-1, all images present).
pub fn tiny_dataset(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let root = dir.path();
    std::fs::write(root.join("train.csv"), format!("{HEADER}\n{TRAIN_ROWS}"))
        .expect("write train.csv");
    std::fs::write(root.join("test.csv"), TEST_CSV).expect("write test.csv");
    let meesho = Taxonomy::meesho();
    let lists: Vec<CategoryAttributes> = CategoryAttributes::of(&meesho)
        .into_iter()
        .filter(|c| c.category == "Men Tshirts" || c.category == "Kurtis")
        .collect();
    write_category_attributes(&root.join("category_attributes.parquet"), &lists)
        .expect("write parquet");
    for (folder, n) in [("train_images", 5), ("test_images", 2)] {
        std::fs::create_dir_all(root.join(folder)).expect("create image folder");
        for id in 0..n {
            std::fs::write(
                root.join(folder).join(format!("{id:06}.jpg")),
                jpeg([200, 30 + 20 * id as u8, 40]),
            )
            .expect("write image");
        }
    }
    dir
}
