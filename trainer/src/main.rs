use clap::Parser;

fn main() {
    let cli = trainer::cli::Cli::parse();
    if let Err(err) = trainer::cli::run(cli) {
        // One clear line (with its causes) on stderr, and a non-zero exit.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
