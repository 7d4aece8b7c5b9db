//! The CSV tables: `train.csv` (and `test_labels.csv`, and submissions, which share its
//! layout) and `test.csv`. Line numbers in errors are the file's own (the header is
//! line 1).

use super::{CategoryAttributes, DataError, LabelledRow, TestRow};
use model_core::taxonomy::{Taxonomy, MAX_ATTRIBUTES};
use std::collections::HashMap;
use std::path::Path;

/// The placeholder that fills a submission's slots after `len`.
pub const DUMMY_VALUE: &str = "dummy_value";

/// What the cells of a labelled table must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRule {
    /// `train.csv`: a blank label cell is a missing label; slots after `len` are blank.
    Blank,
    /// A submission: no blank cells; slots after `len` hold [`DUMMY_VALUE`].
    Dummy,
}

/// One non-blank label cell, handed to the caller to turn into a class index.
#[derive(Debug)]
pub struct Cell<'a> {
    pub line: u64,
    pub id: u64,
    pub category: usize,
    pub attribute: usize,
    pub value: &'a str,
}

/// The column names of the ten attribute slots.
pub fn attr_columns() -> Vec<String> {
    (1..=MAX_ATTRIBUTES).map(|k| format!("attr_{k}")).collect()
}

/// A parsed CSV file: header names and a record reader over its bytes.
struct Table<'p> {
    path: &'p Path,
    header: Vec<String>,
    reader: csv::Reader<std::io::Cursor<Vec<u8>>>,
}

impl<'p> Table<'p> {
    fn open(path: &'p Path) -> Result<Self, DataError> {
        let mut bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        if bytes.starts_with(b"PAR1") {
            return Err(DataError::WrongFormat {
                file: path.to_path_buf(),
                expected: "CSV",
                detail: "it is a parquet file".into(),
            });
        }
        if bytes.contains(&0) {
            return Err(DataError::WrongFormat {
                file: path.to_path_buf(),
                expected: "CSV",
                detail: "it holds NUL bytes, so it is binary data, not text".into(),
            });
        }
        // A UTF-8 byte-order mark (Excel writes one) is not part of the first column name.
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(std::io::Cursor::new(bytes));
        let raw = reader
            .byte_headers()
            .map_err(|e| csv_error(path, e))?
            .clone();
        if raw.is_empty() || (raw.len() == 1 && raw[0].is_empty()) {
            return Err(DataError::WrongFormat {
                file: path.to_path_buf(),
                expected: "CSV",
                detail: "it is empty (no header line)".into(),
            });
        }
        let mut header = Vec::with_capacity(raw.len());
        for (i, field) in raw.iter().enumerate() {
            let name = std::str::from_utf8(field).map_err(|_| DataError::NotUtf8 {
                file: path.to_path_buf(),
                line: 1,
                column: format!("column {}", i + 1),
                value: String::from_utf8_lossy(field).into_owned(),
            })?;
            header.push(name.trim().to_string());
        }
        Ok(Self {
            path,
            header,
            reader,
        })
    }

    fn column(&self, name: &str) -> Result<usize, DataError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                file: self.path.to_path_buf(),
                column: name.to_string(),
                header: self.header.join(","),
            })
    }

    /// Calls `f(line, record)` for each data record.
    fn for_each(
        &mut self,
        mut f: impl FnMut(u64, &csv::ByteRecord) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let mut record = csv::ByteRecord::new();
        loop {
            match self.reader.read_byte_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = record.position().map_or(0, |p| p.line());
                    f(line, &record)?;
                }
                Err(e) => return Err(csv_error(self.path, e)),
            }
        }
    }
}

fn csv_error(path: &Path, err: csv::Error) -> DataError {
    let line = err.position().map_or(0, |p| p.line());
    let message = match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => err.to_string(),
    };
    DataError::Csv {
        file: path.to_path_buf(),
        line,
        message,
    }
}

/// The text of field `index`, trimmed, or an error naming the line and column.
fn text<'r>(
    path: &Path,
    line: u64,
    record: &'r csv::ByteRecord,
    index: usize,
    column: &str,
) -> Result<&'r str, DataError> {
    let field = record.get(index).unwrap_or_default();
    std::str::from_utf8(field)
        .map(str::trim)
        .map_err(|_| DataError::NotUtf8 {
            file: path.to_path_buf(),
            line,
            column: column.to_string(),
            value: String::from_utf8_lossy(field).into_owned(),
        })
}

fn parse_id(path: &Path, line: u64, value: &str) -> Result<u64, DataError> {
    value.parse::<u64>().map_err(|_| DataError::BadValue {
        file: path.to_path_buf(),
        line,
        column: "id".into(),
        value: value.to_string(),
        problem: "is not a whole number >= 0".into(),
    })
}

/// Remembers the line of each id and rejects a second one.
#[derive(Default)]
struct IdSet(HashMap<u64, u64>);

impl IdSet {
    fn insert(&mut self, path: &Path, line: u64, id: u64) -> Result<(), DataError> {
        if let Some(&first) = self.0.get(&id) {
            return Err(DataError::DuplicateId {
                file: path.to_path_buf(),
                line,
                id,
                first,
            });
        }
        self.0.insert(id, line);
        Ok(())
    }
}

fn category_lookup(lists: &[CategoryAttributes]) -> HashMap<&str, usize> {
    lists
        .iter()
        .enumerate()
        .map(|(i, c)| (c.category.as_str(), i))
        .collect()
}

fn unknown_category(
    path: &Path,
    line: u64,
    value: &str,
    lists: &[CategoryAttributes],
) -> DataError {
    DataError::UnknownCategory {
        file: path.to_path_buf(),
        line,
        value: value.to_string(),
        known: lists
            .iter()
            .map(|c| format!("{:?}", c.category))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Reads a table in `train.csv`'s layout. `label` turns each non-blank label cell into a
/// class index, or `None` to treat it as missing.
pub fn read_labelled(
    path: &Path,
    lists: &[CategoryAttributes],
    rule: SlotRule,
    mut label: impl FnMut(&Cell) -> Result<Option<usize>, DataError>,
) -> Result<Vec<LabelledRow>, DataError> {
    let mut table = Table::open(path)?;
    let id_col = table.column("id")?;
    let cat_col = table.column("Category")?;
    let len_col = table.column("len")?;
    let attr_names = attr_columns();
    let attr_cols = attr_names
        .iter()
        .map(|name| table.column(name))
        .collect::<Result<Vec<_>, _>>()?;
    let categories = category_lookup(lists);
    let mut ids = IdSet::default();
    let mut rows = Vec::new();
    table.for_each(|line, record| {
        let id = parse_id(path, line, text(path, line, record, id_col, "id")?)?;
        ids.insert(path, line, id)?;
        let name = text(path, line, record, cat_col, "Category")?;
        let category = *categories
            .get(name)
            .ok_or_else(|| unknown_category(path, line, name, lists))?;
        let expected = lists[category].attributes.len();
        let len_text = text(path, line, record, len_col, "len")?;
        if len_text.parse::<usize>().ok() != Some(expected) {
            return Err(DataError::LenMismatch {
                file: path.to_path_buf(),
                line,
                category: name.to_string(),
                value: len_text.to_string(),
                expected,
            });
        }
        let mut labels = Vec::with_capacity(expected);
        for (slot, (&col, column)) in attr_cols.iter().zip(&attr_names).enumerate() {
            let value = text(path, line, record, col, column)?;
            let bad = |problem: &str| DataError::BadValue {
                file: path.to_path_buf(),
                line,
                column: column.clone(),
                value: value.to_string(),
                problem: problem.to_string(),
            };
            if slot >= expected {
                match rule {
                    SlotRule::Blank if !value.is_empty() => {
                        return Err(bad(
                            "is after the category's len, so the cell must be blank",
                        ))
                    }
                    SlotRule::Dummy if value != DUMMY_VALUE => {
                        return Err(bad(
                            "is after the category's len, so the cell must be dummy_value",
                        ))
                    }
                    _ => continue,
                }
            }
            if value.is_empty() {
                if rule == SlotRule::Dummy {
                    return Err(bad("is blank; a submission has no blank cells"));
                }
                labels.push(None);
                continue;
            }
            labels.push(label(&Cell {
                line,
                id,
                category,
                attribute: slot,
                value,
            })?);
        }
        rows.push(LabelledRow {
            id,
            category,
            labels,
        });
        Ok(())
    })?;
    Ok(rows)
}

/// Reads `test.csv` (`id,Category`; other columns are ignored).
pub fn read_test(path: &Path, taxonomy: &Taxonomy) -> Result<Vec<TestRow>, DataError> {
    let lists = CategoryAttributes::of(taxonomy);
    let mut table = Table::open(path)?;
    let id_col = table.column("id")?;
    let cat_col = table.column("Category")?;
    let categories = category_lookup(&lists);
    let mut ids = IdSet::default();
    let mut rows = Vec::new();
    table.for_each(|line, record| {
        let id = parse_id(path, line, text(path, line, record, id_col, "id")?)?;
        ids.insert(path, line, id)?;
        let name = text(path, line, record, cat_col, "Category")?;
        let category = *categories
            .get(name)
            .ok_or_else(|| unknown_category(path, line, name, &lists))?;
        rows.push(TestRow { id, category });
        Ok(())
    })?;
    Ok(rows)
}

/// Writes rows in `train.csv`'s layout (`id,Category,len,attr_1..attr_10`): class names,
/// blank for a missing label, and `after_len` in the slots after `len`.
pub fn write_labelled(
    path: &Path,
    taxonomy: &Taxonomy,
    rows: &[LabelledRow],
    after_len: &str,
) -> Result<(), DataError> {
    let mut writer = csv::Writer::from_path(path).map_err(|e| csv_write_error(path, e))?;
    let mut header = vec!["id".to_string(), "Category".into(), "len".into()];
    header.extend(attr_columns());
    writer
        .write_record(&header)
        .map_err(|e| csv_write_error(path, e))?;
    for row in rows {
        let category = &taxonomy.categories[row.category];
        let mut record = vec![
            row.id.to_string(),
            category.name.clone(),
            category.attributes.len().to_string(),
        ];
        for slot in 0..MAX_ATTRIBUTES {
            record.push(
                match (category.attributes.get(slot), row.labels.get(slot)) {
                    (Some(spec), Some(Some(class))) => spec.classes[*class].clone(),
                    (Some(_), _) => String::new(),
                    (None, _) => after_len.to_string(),
                },
            );
        }
        writer
            .write_record(&record)
            .map_err(|e| csv_write_error(path, e))?;
    }
    writer.flush().map_err(|e| DataError::io(path, e))
}

/// Writes `test.csv` (`id,Category`).
pub fn write_test(path: &Path, taxonomy: &Taxonomy, rows: &[TestRow]) -> Result<(), DataError> {
    let mut writer = csv::Writer::from_path(path).map_err(|e| csv_write_error(path, e))?;
    writer
        .write_record(["id", "Category"])
        .map_err(|e| csv_write_error(path, e))?;
    for row in rows {
        writer
            .write_record([
                row.id.to_string().as_str(),
                taxonomy.categories[row.category].name.as_str(),
            ])
            .map_err(|e| csv_write_error(path, e))?;
    }
    writer.flush().map_err(|e| DataError::io(path, e))
}

fn csv_write_error(path: &Path, err: csv::Error) -> DataError {
    match err.into_kind() {
        csv::ErrorKind::Io(e) => DataError::io(path, e),
        other => DataError::Csv {
            file: path.to_path_buf(),
            line: 0,
            message: format!("{other:?}"),
        },
    }
}
