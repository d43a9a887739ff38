//! `voxgate-ops convert`: resample a WAV file to mono PCM16 at a given rate.
//!
//! The file is streamed: it is read, downmixed, resampled and written one chunk at a time, so memory
//! stays constant whatever its length. The output is aligned with the input (the resampler's delay is
//! dropped) and exactly `round(frames * rate / input_rate)` samples long.

use std::path::Path;

use anyhow::{Context, bail};
use voxgate_dsp::resample::Resampler;
use voxgate_dsp::wav::{WavReader, WavWriter};

/// Frames read per step: 64 Ki frames is about 1.5 s at 44.1 kHz, large enough that per-call costs
/// vanish and small enough to keep memory flat.
const CHUNK_FRAMES: usize = 1 << 16;

/// Arguments of `voxgate-ops convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input WAV file (any rate, any channel count, PCM 8/16/24/32-bit or 32-bit float).
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// Output WAV file (mono PCM16); created or overwritten.
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// Output sample rate in Hz.
    #[arg(long)]
    pub rate: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("invalid --rate 0: the output sample rate must be a positive number of Hz");
    }
    if same_file(&args.input, &args.output) {
        bail!(
            "--input and --output are the same file ({}); writing would destroy the input",
            args.input.display()
        );
    }
    let reader = WavReader::open(&args.input)
        .with_context(|| format!("failed to read WAV file {}", args.input.display()))?;
    let info = reader.info();
    let resampler = Resampler::new_arbitrary(info.sample_rate, args.rate).with_context(|| {
        format!(
            "cannot convert {} from {} Hz to {} Hz",
            args.input.display(),
            info.sample_rate,
            args.rate
        )
    })?;
    let writer = WavWriter::create(&args.output, args.rate)
        .with_context(|| format!("failed to create {}", args.output.display()))?;

    match stream(reader, resampler, writer, args) {
        Ok(written) => {
            println!(
                "{}: {} Hz, {} channel(s), {}-bit {:?}, {} frames -> {}: {} Hz mono PCM16, {} samples",
                args.input.display(),
                info.sample_rate,
                info.channels,
                info.bits_per_sample,
                info.encoding,
                info.frames,
                args.output.display(),
                args.rate,
                written
            );
            Ok(())
        }
        Err(err) => {
            // Do not leave a truncated file that looks like a result behind.
            let _ = std::fs::remove_file(&args.output);
            Err(err)
        }
    }
}

/// Read, resample and write until the input ends; returns the samples written.
fn stream(
    mut reader: WavReader<std::io::BufReader<std::fs::File>>,
    mut resampler: Resampler,
    mut writer: WavWriter<std::io::BufWriter<std::fs::File>>,
    args: &Args,
) -> anyhow::Result<u64> {
    let mut input = vec![0.0f32; CHUNK_FRAMES];
    let mut output =
        Vec::with_capacity(resampler.max_output_len(CHUNK_FRAMES) + resampler.max_flush_len());
    // The first `delay` output samples are the filter's run-in, before the input's first sample.
    let mut skip = resampler.delay();
    loop {
        let frames = reader
            .read_chunk(&mut input)
            .with_context(|| format!("failed to read samples from {}", args.input.display()))?;
        output.clear();
        if frames == 0 {
            resampler.flush_into(&mut output);
        } else {
            resampler.process_into(&input[..frames], &mut output);
        }
        let dropped = skip.min(output.len());
        skip -= dropped;
        writer
            .write(&output[dropped..])
            .with_context(|| format!("failed to write {}", args.output.display()))?;
        if frames == 0 {
            break;
        }
    }
    let written = writer.samples_written();
    writer
        .finalize()
        .with_context(|| format!("failed to finish {}", args.output.display()))?;
    Ok(written)
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
