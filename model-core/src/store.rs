//! Strict weight loading and safetensors files, shared by the Hub import (`hf`) and the
//! models exported for the web page (`export`).
//!
//! "Strict" means every parameter of the module comes from the file with the right
//! shape, and every tensor of the file lands somewhere; anything else is a
//! [`LoadMismatch`] listing the keys at fault.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::{
    ApplyError, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

/// How many keys an error lists before summarising the rest as a count.
const KEYS_SHOWN: usize = 8;

/// Why the tensors of a file do not fit a module, keys in the file's own spelling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadMismatch {
    /// Parameters of the module that the file lacks.
    pub missing: Vec<String>,
    /// Tensors of the file that match no parameter.
    pub unexpected: Vec<String>,
    /// `(key, shape the module expects, shape in the file)`.
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Tensors whose data could not be read: `key: reason`.
    pub unreadable: Vec<String>,
}

impl LoadMismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.misshaped.is_empty()
            && self.unreadable.is_empty()
    }
}

impl std::fmt::Display for LoadMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn list(items: &[String]) -> String {
            let shown: Vec<&str> = items.iter().take(KEYS_SHOWN).map(String::as_str).collect();
            let more = items.len().saturating_sub(KEYS_SHOWN);
            if more > 0 {
                format!("{} (and {more} more)", shown.join(", "))
            } else {
                shown.join(", ")
            }
        }
        let mut parts = Vec::new();
        if !self.unreadable.is_empty() {
            parts.push(format!(
                "{} unreadable tensor(s): {}",
                self.unreadable.len(),
                list(&self.unreadable)
            ));
        }
        if !self.misshaped.is_empty() {
            let items: Vec<String> = self
                .misshaped
                .iter()
                .map(|(k, want, got)| format!("{k} (network expects {want:?}, file has {got:?})"))
                .collect();
            parts.push(format!(
                "{} mis-shaped key(s): {}",
                items.len(),
                list(&items)
            ));
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing key(s): {}",
                self.missing.len(),
                list(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected key(s): {}",
                self.unexpected.len(),
                list(&self.unexpected)
            ));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Loads `tensors` (already renamed to module paths) into `module`, strictly.
///
/// With `pytorch_layout`, PyTorch conventions are accepted as they come: a LayerNorm's
/// `weight`/`bias` fill Burn's `gamma`/`beta`, and linear weights stored `[out, in]`
/// are transposed (Burn's PyTorch adapter). Without it the file holds Burn's own paths
/// and layouts. Tensors stored in another float type are converted to f32.
/// `name` turns a module path back into the file's key for error messages.
pub fn apply_strict<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    tensors: Vec<(String, TensorSnapshot)>,
    pytorch_layout: bool,
    name: impl Fn(&str) -> String,
) -> Result<M, LoadMismatch> {
    // The LayerNorm renaming is done here, against the module's own parameter paths,
    // rather than left to Burn's adapter, so that its report of unused tensors stays
    // exact.
    let own_paths: HashSet<String> = module
        .collect(None, None, false)
        .iter()
        .map(TensorSnapshot::full_path)
        .collect();
    let snapshots = tensors
        .into_iter()
        .map(|(mut path, snapshot)| {
            if pytorch_layout && !own_paths.contains(&path) {
                if let Some(norm_path) = norm_param_name(&path) {
                    if own_paths.contains(&norm_path) {
                        path = norm_path;
                    }
                }
            }
            as_f32(&snapshot, &path)
        })
        .collect();
    let adapter: Option<Box<dyn burn_store::ModuleAdapter>> = if pytorch_layout {
        Some(Box::new(PyTorchToBurnAdapter))
    } else {
        None
    };
    let result = module.apply(snapshots, None, adapter, false);
    let mut mismatch = LoadMismatch::default();
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => mismatch
                .misshaped
                .push((name(path), expected.to_vec(), found.to_vec())),
            ApplyError::DTypeMismatch { path, .. }
            | ApplyError::AdapterError { path, .. }
            | ApplyError::LoadError { path, .. } => {
                mismatch.unreadable.push(format!("{}: {error}", name(path)))
            }
        }
    }
    mismatch.missing = result.missing.iter().map(|(p, _)| name(p)).collect();
    mismatch.unexpected = result.unused.iter().map(|p| name(p)).collect();
    if mismatch.is_empty() {
        Ok(module)
    } else {
        Err(mismatch)
    }
}

/// Burn's name for a LayerNorm parameter that PyTorch calls `weight` or `bias`.
pub fn norm_param_name(path: &str) -> Option<String> {
    if let Some(stem) = path.strip_suffix(".weight") {
        Some(format!("{stem}.gamma"))
    } else {
        path.strip_suffix(".bias")
            .map(|stem| format!("{stem}.beta"))
    }
}

/// The same tensor under a new path, converted to f32 when it was stored otherwise
/// (checkpoints and web exports are often f16 or bf16).
fn as_f32(snapshot: &TensorSnapshot, path: &str) -> TensorSnapshot {
    let data = snapshot.clone_data_fn();
    let data_fn: Rc<dyn Fn() -> _> = if snapshot.dtype == DType::F32 {
        data
    } else {
        Rc::new(move || data().map(|d| d.convert::<f32>()))
    };
    TensorSnapshot::from_closure(
        data_fn,
        DType::F32,
        snapshot.shape.clone(),
        path.split('.').map(str::to_string).collect(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}

/// A safetensors file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("not a readable safetensors file: {0}")]
pub struct SafetensorsError(pub String);

/// The tensors of an in-memory safetensors file, by key (data read lazily).
pub fn read_safetensors(
    bytes: Vec<u8>,
) -> Result<BTreeMap<String, TensorSnapshot>, SafetensorsError> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let tensors = store
        .get_all_snapshots()
        .map_err(|e| SafetensorsError(e.to_string()))?
        .clone();
    if tensors.is_empty() {
        return Err(SafetensorsError("the file holds no tensors".into()));
    }
    Ok(tensors)
}

/// Float precision of stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F16,
    F32,
}

impl Precision {
    pub fn bytes_per_value(self) -> usize {
        match self {
            Precision::F16 => 2,
            Precision::F32 => 4,
        }
    }
}

/// Writes every parameter of `module` to an in-memory safetensors file, under Burn's
/// module paths, in the given precision.
pub fn write_safetensors<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: &M,
    precision: Precision,
) -> Result<Vec<u8>, SafetensorsError> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for snapshot in module.collect(None, None, false) {
        let data: TensorData = snapshot
            .to_data()
            .map_err(|e| SafetensorsError(format!("{}: {e:?}", snapshot.full_path())))?;
        let shape = data.shape.to_vec();
        let bytes = match precision {
            Precision::F32 => data.convert::<f32>().into_bytes().to_vec(),
            Precision::F16 => data.convert::<half::f16>().into_bytes().to_vec(),
        };
        tensors.push((snapshot.full_path(), shape, bytes));
    }
    let dtype = match precision {
        Precision::F16 => Dtype::F16,
        Precision::F32 => Dtype::F32,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| SafetensorsError(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| SafetensorsError(e.to_string()))
}

/// Reads a safetensors file written by [`write_safetensors`] back into `module`.
pub fn load_safetensors<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    bytes: Vec<u8>,
) -> Result<M, LoadError> {
    let tensors = read_safetensors(bytes)?;
    apply_strict(module, tensors.into_iter().collect(), false, str::to_string)
        .map_err(LoadError::Mismatch)
}

/// Weights that cannot be loaded into a module.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] SafetensorsError),
    #[error("the weights do not fit the network: {0}")]
    Mismatch(LoadMismatch),
}
