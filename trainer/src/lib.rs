//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod cli;
pub mod data;
pub mod rng;
pub mod synth;
