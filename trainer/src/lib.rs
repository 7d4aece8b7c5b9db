//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod bench_model;
pub mod classify_hf;
pub mod cli;
pub mod curves;
pub mod default_job;
pub mod device;
pub mod fsutil;
pub mod predict;
pub mod run;
pub mod train;
pub mod augment;
pub mod data;
pub mod rng;
pub mod split;
pub mod submission;
pub mod synth;
