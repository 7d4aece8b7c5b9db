//! The trainer: data, training, evaluation, prediction and export, behind a thin `main`.

pub mod augment;
pub mod bench;
pub mod bench_model;
pub mod classify_hf;
pub mod cli;
pub mod curves;
pub mod data;
pub mod data_cli;
pub mod default_job;
pub mod device;
pub mod fsutil;
pub mod predict;
pub mod rng;
pub mod run;
pub mod split;
pub mod submission;
pub mod synth;
pub mod train;
