//! The data report: every row that a run skipped and every label cell it dropped, with
//! the reason, so that nothing disappears unnoticed.
//!
//! Written as CSV with the columns `split,id,file,action,reason`, for example
//!
//! ```text
//! split,id,file,action,reason
//! train,17,/data/train_images/000017.jpg,skipped,empty file
//! test_labels,4,/data/test_labels.csv,label_dropped,"line 6: color=""teal"" is not a class ..."
//! ```
//!
//! The file is always written, with only its header when nothing was dropped.

use super::DataError;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReportAction {
    /// The whole row is left out (its image cannot be used).
    Skipped,
    /// The row is kept, one label cell is treated as missing.
    LabelDropped,
}

impl fmt::Display for ReportAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Skipped => "skipped",
            Self::LabelDropped => "label_dropped",
        })
    }
}

/// One reported row or cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEntry {
    /// `train`, `test` or `test_labels`.
    pub split: String,
    pub id: u64,
    /// The image or table at fault.
    pub file: PathBuf,
    pub action: ReportAction,
    /// Starts with a short kind ("missing file", "empty file", ...), used for the counts.
    pub reason: String,
}

impl ReportEntry {
    /// The reason up to its first colon: what the summary counts by.
    pub fn kind(&self) -> &str {
        self.reason.split(':').next().unwrap_or("").trim()
    }
}

/// All reported rows and cells of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataReport {
    pub entries: Vec<ReportEntry>,
}

impl DataReport {
    pub fn push(&mut self, entry: ReportEntry) {
        self.entries.push(entry);
    }

    pub fn extend(&mut self, other: DataReport) {
        self.entries.extend(other.entries);
    }

    /// Number of skipped rows of `split`.
    pub fn skipped(&self, split: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e.split == split && e.action == ReportAction::Skipped)
            .count()
    }

    /// Counts by split, action and kind, one line each, e.g.
    /// `train: 2 rows skipped: empty file`.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut counts: BTreeMap<(&str, ReportAction, &str), usize> = BTreeMap::new();
        for e in &self.entries {
            *counts
                .entry((e.split.as_str(), e.action, e.kind()))
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((split, action, kind), n)| match action {
                ReportAction::Skipped => format!("{split}: {n} row(s) skipped: {kind}"),
                ReportAction::LabelDropped => {
                    format!("{split}: {n} label(s) treated as missing: {kind}")
                }
            })
            .collect()
    }

    /// Writes the report as CSV (see the module docs), creating the folder if needed.
    pub fn write_csv(&self, path: &Path) -> Result<(), DataError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        let mut writer = csv::Writer::from_path(path).map_err(|e| DataError::Csv {
            file: path.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
        let mut write = |fields: [&str; 5]| {
            writer.write_record(fields).map_err(|e| DataError::Csv {
                file: path.to_path_buf(),
                line: 0,
                message: e.to_string(),
            })
        };
        write(["split", "id", "file", "action", "reason"])?;
        for e in &self.entries {
            write([
                &e.split,
                &e.id.to_string(),
                &e.file.display().to_string(),
                &e.action.to_string(),
                &e.reason,
            ])?;
        }
        writer.flush().map_err(|e| DataError::io(path, e))
    }
}
