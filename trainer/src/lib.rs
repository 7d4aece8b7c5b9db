//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod classify_hf;
pub mod cli;
