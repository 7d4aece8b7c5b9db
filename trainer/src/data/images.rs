//! Images: decoded once, in parallel, resized to the training size and kept as 8-bit RGB,
//! in memory or in an on-disk cache, so that later epochs never decode a JPEG again.
//!
//! A row whose image is missing, empty, a truncated JPEG or not decodable is skipped and
//! reported; the decoder in `image` fills a truncated JPEG's missing part with grey
//! instead of failing, so a JPEG must end with its end-of-image marker.
//!
//! The on-disk cache keeps one file per image, `DIR/<size>px/<split>/<id:06>.rgb`: a
//! 24-byte header (`GRB1`, the side as u32, the source file's length and modification
//! time as u64, little-endian) and then `size * size * 3` bytes of RGB. An entry whose
//! header does not match the source file is rebuilt. At 512 px an image takes 768 KiB,
//! so the real data (about 100,000 images) needs the disk cache (about 75 GiB) rather
//! than memory.

use super::report::{DataReport, ReportAction, ReportEntry};
use super::{image_file_name, DataError};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use model_core::preprocess::{decode_rgb, PreprocessConfig};
use rayon::prelude::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const CACHE_MAGIC: &[u8; 4] = b"GRB1";
const CACHE_HEADER_LEN: usize = 24;
/// How far from the end of a JPEG its end-of-image marker may lie (some writers append
/// padding or metadata after it).
const JPEG_TAIL_WINDOW: usize = 4096;

/// Where the resized images are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMode {
    /// In memory: fine for small sizes or small data sets.
    Memory,
    /// One file per image under this folder, reused by later runs at the same size.
    Disk(PathBuf),
}

/// How images are loaded.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The training size: images are resized once to `size x size` with model-core's
    /// preprocessing resize.
    pub size: u32,
    pub cache: CacheMode,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
}

impl ImageOptions {
    pub fn in_memory(size: u32) -> Self {
        Self {
            size,
            cache: CacheMode::Memory,
            progress: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Memory(Box<[u8]>),
    Disk(PathBuf),
}

/// The resized images of a set of rows, all `size x size` RGB.
#[derive(Debug, Clone)]
pub struct ImageStore {
    size: u32,
    entries: Vec<Entry>,
}

impl ImageStore {
    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Image `index`, `size x size` RGB.
    pub fn get(&self, index: usize) -> Result<RgbImage, DataError> {
        let pixels = match &self.entries[index] {
            Entry::Memory(pixels) => pixels.to_vec(),
            Entry::Disk(path) => read_cache_pixels(path, self.size)?,
        };
        RgbImage::from_raw(self.size, self.size, pixels).ok_or_else(|| DataError::Cache {
            file: PathBuf::new(),
            message: "cached image has the wrong length".into(),
        })
    }
}

/// The rows of one split whose images could be used.
#[derive(Debug, Clone)]
pub struct LoadedSplit {
    /// Indices into the split's rows (e.g. [`super::Dataset::train`]), in file order.
    pub rows: Vec<usize>,
    /// `images.get(k)` is the image of row `rows[k]`.
    pub images: ImageStore,
}

impl LoadedSplit {
    /// The rows of `all` (e.g. [`super::Dataset::train`]) that have an image, aligned
    /// with [`Self::images`]: element `k` belongs to `images.get(k)`.
    pub fn select<'a, T>(&self, all: &'a [T]) -> Vec<&'a T> {
        self.rows.iter().map(|&i| &all[i]).collect()
    }
}

/// Why an image cannot be used.
fn skip_reason(path: &Path, cfg: &PreprocessConfig) -> Result<RgbImage, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing file".into()),
        Err(e) => return Err(format!("unreadable file: {e}")),
    };
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.starts_with(&[0xFF, 0xD8]) && !has_jpeg_end(&bytes) {
        return Err("truncated JPEG: no end-of-image marker".into());
    }
    let image = decode_rgb(&bytes).map_err(|e| format!("not a readable image: {e}"))?;
    Ok(cfg.resize(&image))
}

fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(JPEG_TAIL_WINDOW)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// The source file's length and modification time (nanoseconds), the cache key.
fn source_stamp(meta: &std::fs::Metadata) -> (u64, u64) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (meta.len(), mtime)
}

fn cache_header(size: u32, stamp: (u64, u64)) -> [u8; CACHE_HEADER_LEN] {
    let mut h = [0u8; CACHE_HEADER_LEN];
    h[..4].copy_from_slice(CACHE_MAGIC);
    h[4..8].copy_from_slice(&size.to_le_bytes());
    h[8..16].copy_from_slice(&stamp.0.to_le_bytes());
    h[16..24].copy_from_slice(&stamp.1.to_le_bytes());
    h
}

fn cache_is_valid(path: &Path, size: u32, stamp: (u64, u64)) -> bool {
    let expected_len = (CACHE_HEADER_LEN + (size as usize).pow(2) * 3) as u64;
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut header = [0u8; CACHE_HEADER_LEN];
    file.metadata()
        .map(|m| m.len() == expected_len)
        .unwrap_or(false)
        && file.read_exact(&mut header).is_ok()
        && header == cache_header(size, stamp)
}

fn write_cache(
    path: &Path,
    size: u32,
    stamp: (u64, u64),
    image: &RgbImage,
) -> Result<(), DataError> {
    let tmp = path.with_extension("rgb.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&cache_header(size, stamp))?;
        file.write_all(image.as_raw())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| DataError::io(path, e))
}

fn read_cache_pixels(path: &Path, size: u32) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let expected = CACHE_HEADER_LEN + (size as usize).pow(2) * 3;
    if bytes.len() != expected || &bytes[..4] != CACHE_MAGIC {
        return Err(DataError::Cache {
            file: path.to_path_buf(),
            message: format!("{} bytes where {expected} were expected", bytes.len()),
        });
    }
    Ok(bytes[CACHE_HEADER_LEN..].to_vec())
}

/// A progress bar for `len` items, hidden unless asked for.
pub(crate) fn progress_bar(len: u64, label: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Loads the images of `ids` from `dir` (`<id:06>.jpg`) for the split called `split`.
/// Returns the usable rows with their images, and a report of the skipped ones.
pub fn load_split(
    split: &str,
    dir: &Path,
    ids: &[u64],
    opts: &ImageOptions,
) -> Result<(LoadedSplit, DataReport), DataError> {
    let cfg = PreprocessConfig::imagenet(opts.size);
    let cache_dir = match &opts.cache {
        CacheMode::Memory => None,
        CacheMode::Disk(root) => {
            let d = root.join(format!("{}px", opts.size)).join(split);
            std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, e))?;
            Some(d)
        }
    };
    let bar = progress_bar(ids.len() as u64, split, opts.progress);
    let outcomes: Vec<Result<Result<Entry, String>, DataError>> = ids
        .par_iter()
        .map(|&id| {
            let source = dir.join(image_file_name(id));
            let outcome = load_one(&source, id, &cfg, cache_dir.as_deref());
            bar.inc(1);
            outcome
        })
        .collect();
    bar.finish_and_clear();

    let mut rows = Vec::with_capacity(ids.len());
    let mut entries = Vec::with_capacity(ids.len());
    let mut report = DataReport::default();
    for (row, (outcome, &id)) in outcomes.into_iter().zip(ids).enumerate() {
        match outcome? {
            Ok(entry) => {
                rows.push(row);
                entries.push(entry);
            }
            Err(reason) => report.push(ReportEntry {
                split: split.to_string(),
                id,
                file: dir.join(image_file_name(id)),
                action: ReportAction::Skipped,
                reason,
            }),
        }
    }
    Ok((
        LoadedSplit {
            rows,
            images: ImageStore {
                size: opts.size,
                entries,
            },
        },
        report,
    ))
}

/// `Ok(Err(reason))`: skip the row; `Err`: the cache cannot be written, stop.
fn load_one(
    source: &Path,
    id: u64,
    cfg: &PreprocessConfig,
    cache_dir: Option<&Path>,
) -> Result<Result<Entry, String>, DataError> {
    let Some(cache_dir) = cache_dir else {
        return Ok(
            skip_reason(source, cfg).map(|img| Entry::Memory(img.into_raw().into_boxed_slice()))
        );
    };
    let meta = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("missing file".into()))
        }
        Err(e) => return Ok(Err(format!("unreadable file: {e}"))),
    };
    let stamp = source_stamp(&meta);
    let cached = cache_dir.join(format!("{id:06}.rgb"));
    if meta.len() > 0 && cache_is_valid(&cached, cfg.size, stamp) {
        return Ok(Ok(Entry::Disk(cached)));
    }
    match skip_reason(source, cfg) {
        Ok(image) => {
            write_cache(&cached, cfg.size, stamp, &image)?;
            Ok(Ok(Entry::Disk(cached)))
        }
        Err(reason) => Ok(Err(reason)),
    }
}
