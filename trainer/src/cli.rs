//! Command-line interface: one subcommand per job.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "trainer",
    version,
    about = "Garment-attribute tagger: train, evaluate, predict, export"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a synthetic garment data set in the Meesho layout.
    Synth(crate::data_cli::SynthArgs),
    /// Read a data set, decode every image once and report skipped rows.
    CheckData(crate::data_cli::CheckDataArgs),
    /// Measure the input pipeline's throughput (decode, resize, augment).
    BenchData(crate::data_cli::BenchDataArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            println!("The embedded default job is still to come; see README.md.");
            Ok(())
        }
        Some(command) => match command {
            Command::Synth(args) => args.run(),
            Command::CheckData(args) => args.run(),
            Command::BenchData(args) => args.run(),
        },
    }
}
