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
pub enum Command {}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            println!("The embedded default job is still to come; see README.md.");
            Ok(())
        }
        Some(command) => match command {},
    }
}
