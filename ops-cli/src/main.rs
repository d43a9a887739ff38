//! `voxgate-ops`: the operators' command line. Thin over `voxgate-dsp` and the `voxgate` library.

use clap::{Parser, Subcommand};

mod convert;
mod loadtest;

/// Operator tools for voxgate: audio conversion, maintenance jobs and load tests.
#[derive(Parser, Debug)]
#[command(name = "voxgate-ops", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Resample a WAV file (any rate, mono or stereo, PCM16 or float) to mono PCM16 at a given rate.
    Convert(convert::Args),
    /// Open N seed-002 sessions against a gateway with an echo upstream; report latency, losses, CPU and RSS.
    Loadtest(loadtest::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Convert(args) => convert::run(&args),
        Command::Loadtest(args) => loadtest::run(&args),
    }
}
