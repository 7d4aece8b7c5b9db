//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod augment;
pub mod bench;
pub mod cli;
pub mod data;
pub mod data_cli;
pub mod rng;
pub mod split;
pub mod submission;
pub mod synth;
