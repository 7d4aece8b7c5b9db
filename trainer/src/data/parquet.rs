//! `category_attributes.parquet`: one row per category with `Category` (text),
//! `No_of_attribute` (integer) and `Attribute_list` (a list of text, in `attr_1..`
//! order). Read and written with the `parquet` crate's Arrow reader and writer.
//!
//! The reader accepts the column types that pandas/pyarrow and other writers produce:
//! text as `Utf8`, `LargeUtf8`, `Utf8View` or a dictionary of those; the count as any
//! integer type; the list as `List` or `LargeList` of text (or, leniently, as text
//! holding a Python-style list such as `['color', 'neck']`).

use super::{CategoryAttributes, DataError};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

const CATEGORY: &str = "Category";
const COUNT: &str = "No_of_attribute";
const LIST: &str = "Attribute_list";

/// Reads the categories and their attribute names, in file order.
pub fn read_category_attributes(path: &Path) -> Result<Vec<CategoryAttributes>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let parquet_error = |e: parquet::errors::ParquetError| DataError::WrongFormat {
        file: path.to_path_buf(),
        expected: "parquet",
        detail: e.to_string(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)?;
    let mut out: Vec<CategoryAttributes> = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::Parquet {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| DataError::MissingColumn {
                    file: path.to_path_buf(),
                    column: name.to_string(),
                    header: batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                })
        };
        let (categories, counts, lists) = (column(CATEGORY)?, column(COUNT)?, column(LIST)?);
        let unsupported = |name: &str, array: &ArrayRef| DataError::Parquet {
            file: path.to_path_buf(),
            message: format!(
                "column {name:?} has type {}, which is not supported here",
                array.data_type()
            ),
        };
        let categories =
            strings(categories.as_ref()).ok_or_else(|| unsupported(CATEGORY, &categories))?;
        let counts = integers(counts.as_ref()).ok_or_else(|| unsupported(COUNT, &counts))?;
        let lists = string_lists(lists.as_ref()).ok_or_else(|| unsupported(LIST, &lists))?;
        for ((category, count), list) in categories.into_iter().zip(counts).zip(lists) {
            row += 1;
            let row_error = |message: String| DataError::ParquetRow {
                file: path.to_path_buf(),
                row,
                message,
            };
            let category = category.ok_or_else(|| row_error(format!("{CATEGORY} is null")))?;
            let list = list.ok_or_else(|| row_error(format!("{LIST} of {category:?} is null")))?;
            let attributes = list
                .into_iter()
                .map(|a| a.ok_or_else(|| row_error(format!("{LIST} of {category:?} holds a null"))))
                .collect::<Result<Vec<_>, _>>()?;
            let count =
                count.ok_or_else(|| row_error(format!("{COUNT} of {category:?} is null")))?;
            if count != attributes.len() as i64 {
                return Err(row_error(format!(
                    "{COUNT} is {count} but {LIST} of {category:?} has {} names: {attributes:?}",
                    attributes.len()
                )));
            }
            if out.iter().any(|c| c.category == category) {
                return Err(row_error(format!("category {category:?} appears twice")));
            }
            out.push(CategoryAttributes {
                category,
                attributes,
            });
        }
    }
    if out.is_empty() {
        return Err(DataError::Parquet {
            file: path.to_path_buf(),
            message: "no categories".into(),
        });
    }
    Ok(out)
}

/// Writes the categories and their attribute names, snappy-compressed, as pandas would.
pub fn write_category_attributes(
    path: &Path,
    categories: &[CategoryAttributes],
) -> Result<(), DataError> {
    let item = Arc::new(Field::new("element", DataType::Utf8, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new(CATEGORY, DataType::Utf8, false),
        Field::new(COUNT, DataType::Int64, false),
        Field::new(LIST, DataType::List(item.clone()), false),
    ]));
    let names = StringArray::from_iter_values(categories.iter().map(|c| c.category.as_str()));
    let counts = Int64Array::from_iter_values(categories.iter().map(|c| c.attributes.len() as i64));
    let mut lists = ListBuilder::new(StringBuilder::new()).with_field(item.clone());
    for c in categories {
        for a in &c.attributes {
            lists.values().append_value(a);
        }
        lists.append(true);
    }
    let lists = lists.finish();
    let write_error = |e: String| DataError::Parquet {
        file: path.to_path_buf(),
        message: e,
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(names), Arc::new(counts), Arc::new(lists)],
    )
    .map_err(|e| write_error(e.to_string()))?;
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| write_error(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| write_error(e.to_string()))?;
    writer.close().map_err(|e| write_error(e.to_string()))?;
    Ok(())
}

/// Text values of a string-like column, or `None` for another type.
fn strings(array: &dyn Array) -> Option<Vec<Option<String>>> {
    let collect =
        |it: &mut dyn Iterator<Item = Option<&str>>| it.map(|s| s.map(str::to_string)).collect();
    if let Some(a) = array.as_string_opt::<i32>() {
        return Some(collect(&mut a.iter()));
    }
    if let Some(a) = array.as_string_opt::<i64>() {
        return Some(collect(&mut a.iter()));
    }
    if let Some(a) = array.as_string_view_opt() {
        return Some(collect(&mut a.iter()));
    }
    if let Some(dict) = array.as_any_dictionary_opt() {
        let values = strings(dict.values().as_ref())?;
        let keys = dict.normalized_keys();
        return Some(
            keys.iter()
                .enumerate()
                .map(|(i, &k)| {
                    if dict.keys().is_null(i) {
                        None
                    } else {
                        values.get(k).cloned().flatten()
                    }
                })
                .collect(),
        );
    }
    None
}

/// Values of an integer column, or `None` for another type.
fn integers(array: &dyn Array) -> Option<Vec<Option<i64>>> {
    macro_rules! try_type {
        ($t:ty) => {
            if let Some(a) = array.as_primitive_opt::<$t>() {
                return Some(
                    a.iter()
                        .map(|v| v.and_then(|v| i64::try_from(v).ok()))
                        .collect(),
                );
            }
        };
    }
    try_type!(Int64Type);
    try_type!(Int32Type);
    try_type!(Int16Type);
    try_type!(Int8Type);
    try_type!(UInt64Type);
    try_type!(UInt32Type);
    try_type!(UInt16Type);
    try_type!(UInt8Type);
    None
}

/// Values of a list-of-text column, or `None` for another type.
#[allow(clippy::type_complexity)]
fn string_lists(array: &dyn Array) -> Option<Vec<Option<Vec<Option<String>>>>> {
    fn rows(
        n: usize,
        valid: impl Fn(usize) -> bool,
        value: impl Fn(usize) -> ArrayRef,
    ) -> Option<Vec<Option<Vec<Option<String>>>>> {
        (0..n)
            .map(|i| {
                if valid(i) {
                    strings(value(i).as_ref()).map(Some)
                } else {
                    Some(None)
                }
            })
            .collect()
    }
    if let Some(a) = array.as_list_opt::<i32>() {
        return rows(a.len(), |i| a.is_valid(i), |i| a.value(i));
    }
    if let Some(a) = array.as_list_opt::<i64>() {
        return rows(a.len(), |i| a.is_valid(i), |i| a.value(i));
    }
    // Lenient: a text column holding a Python-style list, `['color', 'neck']`.
    let texts = strings(array)?;
    texts
        .into_iter()
        .map(|t| match t {
            None => Some(None),
            Some(t) => parse_python_list(&t).map(|v| Some(v.into_iter().map(Some).collect())),
        })
        .collect()
}

/// Parses `['a', "b"]` into its strings; `None` if the text is not such a list.
fn parse_python_list(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            let unquoted = item
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| item.strip_prefix('"').and_then(|s| s.strip_suffix('"')))?;
            Some(unquoted.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_written_by_pyarrow_like_pandas() {
        // See fixtures/README.md: snappy, dictionary-encoded categories, large strings,
        // an index column.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/data/fixtures/category_attributes_pyarrow.parquet");
        let lists = read_category_attributes(&path).unwrap();
        assert_eq!(
            lists,
            CategoryAttributes::of(&model_core::taxonomy::Taxonomy::meesho())
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = crate::data::test_support::TempDir::new("parquet_round_trip");
        let path = dir.path().join("c.parquet");
        let lists = CategoryAttributes::of(&model_core::taxonomy::Taxonomy::meesho());
        write_category_attributes(&path, &lists).unwrap();
        assert_eq!(read_category_attributes(&path).unwrap(), lists);
    }

    #[test]
    fn python_lists_parse() {
        assert_eq!(
            parse_python_list("['color', \"neck\"]"),
            Some(vec!["color".to_string(), "neck".to_string()])
        );
        assert_eq!(parse_python_list("color"), None);
    }
}
