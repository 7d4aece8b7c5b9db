//! Reader tests: a tiny hand-written data set, and one test per kind of bad input.

use super::test_support::{jpeg, tiny_dataset, TempDir, HEADER, TRAIN_ROWS};
use super::*;

fn open_err(dir: &TempDir) -> String {
    match Dataset::open(dir.path()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn write(dir: &TempDir, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.path().join(name), bytes).expect("write fixture");
}

#[test]
fn reads_a_tiny_hand_written_dataset() {
    let dir = tiny_dataset("tiny");
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(
        ds.taxonomy_source,
        TaxonomySource::Parquet(dir.path().join(CATEGORY_PARQUET))
    );
    assert_eq!(ds.taxonomy.category_names(), ["Men Tshirts", "Kurtis"]);
    let men = &ds.taxonomy.categories[0];
    // Built-in order for known classes (default before black), only classes in the data.
    assert_eq!(men.attributes[0].classes, ["default", "black"]);
    assert_eq!(
        men.attributes[3].classes,
        ["solid", "default", "typography"]
    );
    let kurtis = &ds.taxonomy.categories[1];
    assert_eq!(
        kurtis.attributes[0].classes,
        ["red", "teal"],
        "a new class follows the known ones"
    );
    assert!(
        ds.warnings
            .iter()
            .any(|w| w.contains("Kurtis/color=\"teal\"")),
        "{:?}",
        ds.warnings
    );

    assert_eq!(ds.train.len(), 5);
    assert_eq!(
        ds.train[0],
        LabelledRow {
            id: 0,
            category: 0,
            labels: vec![Some(1), Some(0), Some(0), Some(0), Some(0)]
        }
    );
    // A blank cell is a missing label; `default` is a class.
    assert_eq!(
        ds.train[2].labels,
        vec![None, Some(0), Some(1), Some(1), None]
    );
    assert_eq!(ds.train[1].labels[0], Some(0));
    assert_eq!(ds.train[4].labels.len(), 9);
    assert_eq!(
        ds.test,
        vec![
            TestRow { id: 0, category: 1 },
            TestRow { id: 1, category: 0 }
        ]
    );
    assert!(ds.test_labels.is_none());

    let report = dir.path().join("out/report.csv");
    let loaded = ds
        .load_images(&ImageOptions::in_memory(32), &report)
        .unwrap();
    assert_eq!(loaded.train.rows, vec![0, 1, 2, 3, 4]);
    assert_eq!(loaded.test.rows, vec![0, 1]);
    let img = loaded.train.images.get(3).unwrap();
    assert_eq!(img.dimensions(), (32, 32));
    assert!(
        img.get_pixel(16, 16).0[0] > 150,
        "the red survives decoding and resizing"
    );
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "split,id,file,action,reason\n"
    );
}

/// Replaces train image `id` with `bytes` (or deletes it) and loads the images.
fn load_with_bad_image(
    label: &str,
    id: u64,
    bytes: Option<Vec<u8>>,
) -> (TempDir, LoadedData, String) {
    let dir = tiny_dataset(label);
    let path = dir.path().join(TRAIN_IMAGES).join(image_file_name(id));
    match bytes {
        Some(b) => std::fs::write(&path, b).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
    let ds = Dataset::open(dir.path()).unwrap();
    let report = dir.path().join("report.csv");
    let loaded = ds
        .load_images(&ImageOptions::in_memory(32), &report)
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap();
    (dir, loaded, text)
}

fn assert_skipped(loaded: &LoadedData, report: &str, id: u64, reason: &str) {
    assert_eq!(loaded.train.rows.len(), 4);
    assert!(
        !loaded.train.rows.contains(&(id as usize)),
        "row {id} skipped"
    );
    assert_eq!(loaded.report.skipped("train"), 1);
    let entry = &loaded.report.entries[0];
    assert_eq!((entry.id, entry.action), (id, ReportAction::Skipped));
    assert!(entry.reason.starts_with(reason), "{}", entry.reason);
    let line = report.lines().nth(1).expect("one reported row");
    assert!(
        line.starts_with(&format!("train,{id},"))
            && line.contains(&image_file_name(id))
            && line.contains(reason),
        "{line}"
    );
    assert_eq!(
        loaded.report.summary_lines(),
        [format!("train: 1 row(s) skipped: {reason}")]
    );
}

#[test]
fn missing_image_skips_the_row() {
    let (dir, loaded, report) = load_with_bad_image("missing", 2, None);
    assert_skipped(&loaded, &report, 2, "missing file");
    // The kept rows stay aligned with their images.
    let ds = Dataset::open(dir.path()).unwrap();
    let ids: Vec<u64> = loaded
        .train
        .select(&ds.train)
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [0, 1, 3, 4]);
    assert_eq!(loaded.train.images.len(), 4);
}

#[test]
fn zero_byte_image_skips_the_row() {
    let (_dir, loaded, report) = load_with_bad_image("empty", 1, Some(Vec::new()));
    assert_skipped(&loaded, &report, 1, "empty file");
}

#[test]
fn truncated_jpeg_skips_the_row() {
    let full = jpeg([10, 200, 30]);
    let (_dir, loaded, report) =
        load_with_bad_image("truncated", 3, Some(full[..full.len() * 2 / 3].to_vec()));
    assert_skipped(&loaded, &report, 3, "truncated JPEG");
}

#[test]
fn text_file_named_jpg_skips_the_row() {
    let (_dir, loaded, report) =
        load_with_bad_image("text", 0, Some(b"hello, I am not a picture\n".to_vec()));
    assert_skipped(&loaded, &report, 0, "not a readable image");
}

#[test]
fn wrong_len_names_file_line_and_value() {
    let dir = tiny_dataset("len");
    write(
        &dir,
        TRAIN_CSV,
        format!(
            "{HEADER}\n{TRAIN_ROWS}5,Kurtis,7,red,a-line,knee length,daily,net,solid,solid,,,\n"
        ),
    );
    let err = open_err(&dir);
    assert!(
        err.contains("train.csv")
            && err.contains("line 7")
            && err.contains("\"7\"")
            && err.contains("9 attributes"),
        "{err}"
    );
}

#[test]
fn unknown_category_names_file_line_and_value() {
    let dir = tiny_dataset("category");
    write(
        &dir,
        TRAIN_CSV,
        format!("{HEADER}\n0,Jeans,5,black,round,solid,solid,short sleeves,,,,,\n"),
    );
    let err = open_err(&dir);
    assert!(
        err.contains("train.csv, line 2") && err.contains("\"Jeans\"") && err.contains("Kurtis"),
        "{err}"
    );
    // In test.csv too.
    let dir = tiny_dataset("category_test");
    write(&dir, TEST_CSV, "id,Category\n0,Kurtis\n1,Sarees\n");
    let err = open_err(&dir);
    assert!(
        err.contains("test.csv, line 3") && err.contains("\"Sarees\""),
        "{err}"
    );
}

#[test]
fn missing_column_names_file_and_column() {
    let dir = tiny_dataset("column");
    let header_without_len = HEADER.replace(",len", "");
    let rows: String = TRAIN_ROWS
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(2);
            f.join(",") + "\n"
        })
        .collect();
    write(&dir, TRAIN_CSV, format!("{header_without_len}\n{rows}"));
    let err = open_err(&dir);
    assert!(
        err.contains("train.csv") && err.contains("missing column \"len\""),
        "{err}"
    );
    let dir = tiny_dataset("column_test");
    write(&dir, TEST_CSV, "id,category\n0,Kurtis\n");
    let err = open_err(&dir);
    assert!(
        err.contains("test.csv") && err.contains("missing column \"Category\""),
        "{err}"
    );
}

#[test]
fn label_outside_the_taxonomy_in_test_data_is_dropped_and_reported() {
    let dir = tiny_dataset("test_labels");
    write(
        &dir,
        TEST_LABELS_CSV,
        format!("{HEADER}\n0,Kurtis,9,purple,a-line,knee length,daily,net,solid,solid,short sleeves,regular,\n1,Men Tshirts,5,black,round,solid,solid,short sleeves,,,,,\n"),
    );
    let ds = Dataset::open(dir.path()).unwrap();
    let labels = ds.test_labels.as_ref().unwrap();
    assert_eq!(
        labels[0].labels[0], None,
        "purple is not a Kurtis colour in train.csv: treated as missing"
    );
    assert_eq!(labels[0].labels[1], Some(0), "the rest of the row is kept");
    assert_eq!(labels[1].labels[0], Some(1));
    assert!(
        ds.warnings
            .iter()
            .any(|w| w.contains("test_labels.csv") && w.contains("1 label(s) outside")),
        "{:?}",
        ds.warnings
    );
    let entry = &ds.report.entries[0];
    assert_eq!(
        (entry.split.as_str(), entry.id, entry.action),
        ("test_labels", 0, ReportAction::LabelDropped)
    );
    assert!(
        entry.reason.contains("line 2") && entry.reason.contains("color=\"purple\""),
        "{}",
        entry.reason
    );
    // The dropped label reaches the report file with the image results.
    let report = dir.path().join("report.csv");
    let loaded = ds
        .load_images(&ImageOptions::in_memory(32), &report)
        .unwrap();
    assert_eq!(loaded.report.entries.len(), 1);
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("test_labels,0,"));
}

#[test]
fn non_utf8_csv_names_file_line_and_column() {
    let dir = tiny_dataset("utf8");
    let mut bytes = format!("{HEADER}\n{TRAIN_ROWS}").into_bytes();
    bytes.extend_from_slice(
        b"5,Kurtis,9,r\xE9d,a-line,knee length,daily,net,solid,solid,short sleeves,regular,\n",
    );
    write(&dir, TRAIN_CSV, bytes);
    let err = open_err(&dir);
    assert!(
        err.contains("train.csv, line 7") && err.contains("attr_1") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn missing_parquet_falls_back_to_the_built_in_taxonomy_with_a_warning() {
    let dir = tiny_dataset("no_parquet");
    std::fs::remove_file(dir.path().join(CATEGORY_PARQUET)).unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.taxonomy_source, TaxonomySource::BuiltIn);
    assert!(
        ds.warnings[0].contains("category_attributes.parquet is missing"),
        "{:?}",
        ds.warnings
    );
    // All five built-in categories; attributes no row labels take the built-in classes.
    assert_eq!(ds.taxonomy.categories.len(), 5);
    assert_eq!(
        ds.taxonomy.categories[2].attributes[0].classes,
        ["red", "teal"]
    );
    assert_eq!(
        ds.taxonomy.categories[1],
        Taxonomy::meesho().categories[1],
        "Sarees, unlabelled, as built in"
    );
    assert_eq!(ds.train.len(), 5);
}

#[test]
fn a_file_that_is_not_parquet_or_csv_is_an_error() {
    let dir = tiny_dataset("not_parquet");
    write(&dir, CATEGORY_PARQUET, "Category,No_of_attribute\n");
    let err = open_err(&dir);
    assert!(
        err.contains("category_attributes.parquet") && err.contains("not a parquet file"),
        "{err}"
    );

    let dir = tiny_dataset("not_csv");
    let parquet_bytes = std::fs::read(dir.path().join(CATEGORY_PARQUET)).unwrap();
    write(&dir, TRAIN_CSV, parquet_bytes);
    let err = open_err(&dir);
    assert!(
        err.contains("train.csv") && err.contains("not a CSV file"),
        "{err}"
    );

    let dir = tiny_dataset("binary_csv");
    write(&dir, TEST_CSV, jpeg([1, 2, 3]));
    let err = open_err(&dir);
    assert!(
        err.contains("test.csv") && err.contains("not a CSV file"),
        "{err}"
    );
}

#[test]
fn other_structural_errors_name_line_and_value() {
    let dir = tiny_dataset("after_len");
    write(
        &dir,
        TRAIN_CSV,
        format!("{HEADER}\n0,Men Tshirts,5,black,round,solid,solid,short sleeves,oops,,,,\n"),
    );
    let err = open_err(&dir);
    assert!(
        err.contains("line 2")
            && err.contains("attr_6")
            && err.contains("\"oops\"")
            && err.contains("blank"),
        "{err}"
    );

    let dir = tiny_dataset("duplicate");
    write(&dir, TEST_CSV, "id,Category\n0,Kurtis\n0,Kurtis\n");
    let err = open_err(&dir);
    assert!(
        err.contains("test.csv, line 3") && err.contains("id 0 appears twice"),
        "{err}"
    );

    let dir = tiny_dataset("bad_id");
    write(&dir, TEST_CSV, "id,Category\nx7,Kurtis\n");
    let err = open_err(&dir);
    assert!(err.contains("line 2") && err.contains("\"x7\""), "{err}");

    let dir = tiny_dataset("ragged");
    write(&dir, TEST_CSV, "id,Category\n0,Kurtis,extra\n");
    let err = open_err(&dir);
    assert!(
        err.contains("test.csv, line 2") && err.contains("3 fields"),
        "{err}"
    );

    let dir = tiny_dataset("parquet_count");
    let mut lists = CategoryAttributes::of(&Taxonomy::meesho());
    lists.truncate(1);
    parquet::write_category_attributes(&dir.path().join(CATEGORY_PARQUET), &lists).unwrap();
    // Men Tshirts only: the Kurtis rows now have an unknown category.
    let err = open_err(&dir);
    assert!(
        err.contains("line 5") && err.contains("\"Kurtis\""),
        "{err}"
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_column() {
    let dir = tiny_dataset("bom");
    write(&dir, TEST_CSV, "\u{FEFF}id,Category\n0,Kurtis\n");
    assert_eq!(Dataset::open(dir.path()).unwrap().test.len(), 1);
}

#[test]
fn the_disk_cache_is_reused_and_rebuilt_when_the_image_changes() {
    let dir = tiny_dataset("cache");
    let ds = Dataset::open(dir.path()).unwrap();
    let cache = dir.path().join("cache");
    let opts = ImageOptions {
        size: 24,
        cache: CacheMode::Disk(cache.clone()),
        progress: false,
    };
    let report = dir.path().join("report.csv");
    let first = ds.load_images(&opts, &report).unwrap();
    let cached = cache.join("24px/train/000001.rgb");
    assert_eq!(std::fs::metadata(&cached).unwrap().len(), 24 + 24 * 24 * 3);
    let before = first.train.images.get(1).unwrap();

    // Overwrite the cache entry's pixels: a reload must use it (no decoding).
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[24..].fill(7);
    std::fs::write(&cached, &bytes).unwrap();
    let second = ds.load_images(&opts, &report).unwrap();
    assert_eq!(
        second.train.images.get(1).unwrap().get_pixel(0, 0).0,
        [7, 7, 7]
    );

    // A changed source image (new length) invalidates the entry.
    let source = dir.path().join(TRAIN_IMAGES).join("000001.jpg");
    let mut new_jpeg = jpeg([200, 50, 40]);
    new_jpeg.extend_from_slice(&[0; 3]); // padding after the end marker changes the length
    std::fs::write(&source, new_jpeg).unwrap();
    let third = ds.load_images(&opts, &report).unwrap();
    let rebuilt = third.train.images.get(1).unwrap();
    assert_ne!(rebuilt.get_pixel(0, 0).0, [7, 7, 7]);
    assert_eq!(rebuilt.dimensions(), before.dimensions());
}
