//! Faster versions of stock Burn operations for the layers our network uses, each
//! tested for equality with the stock operation (`tests/kernels.rs`).

pub mod conv;
pub mod gelu;
