//! `voxgate-ops convert` (being written).

/// Arguments of `voxgate-ops convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input WAV file.
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// Output WAV file (mono PCM16).
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// Output sample rate in Hz.
    #[arg(long)]
    pub rate: u32,
}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("convert is being written")
}
