//! The garment-attribute network and everything the trainer and the web page share:
//! the ConvNeXt backbone, the attention heads, the per-category model, the taxonomy,
//! image preprocessing, the competition score and the training losses.

pub mod convnext;
pub mod export;
pub mod heads;
#[cfg(feature = "pretrained")]
pub mod hf;
pub mod kernels;
pub mod loss;
pub mod masks;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod preprocess;
pub mod store;
pub mod taxonomy;
