//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod augment;
pub mod cli;
pub mod data;
pub mod rng;
pub mod split;
pub mod submission;
pub mod synth;
