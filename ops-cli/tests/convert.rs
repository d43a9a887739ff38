//! `voxgate-ops convert` run as a real process on generated WAV files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use voxgate_dsp::resample::Resampler;

const BIN: &str = env!("CARGO_BIN_EXE_voxgate-ops");

/// How the generated input is stored.
#[derive(Clone, Copy, Debug)]
enum Format {
    Float32,
    Int(u16),
}

/// Write `channels` (each a list of f64 samples in [-1, 1]) as an interleaved WAV.
fn write_wav(path: &Path, rate: u32, format: Format, channels: &[Vec<f64>]) {
    let (bits, sample_format) = match format {
        Format::Float32 => (32, hound::SampleFormat::Float),
        Format::Int(bits) => (bits, hound::SampleFormat::Int),
    };
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..channels[0].len() {
        for ch in channels {
            match format {
                Format::Float32 => w.write_sample(ch[n] as f32).unwrap(),
                Format::Int(bits) => {
                    let full = f64::from((1u32 << (bits - 1)) - 1);
                    w.write_sample((ch[n] * full).round() as i32).unwrap();
                }
            }
        }
    }
    w.finalize().unwrap();
}

fn sine(freq: f64, rate: u32, len: usize, amplitude: f64) -> Vec<f64> {
    (0..len)
        .map(|n| amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin())
        .collect()
}

fn convert(input: &Path, output: &Path, rate: &str) -> Output {
    Command::new(BIN)
        .args(["convert", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--rate", rate])
        .output()
        .expect("run voxgate-ops")
}

/// Read a converted file, checking it is mono PCM16 at `rate`.
fn read_output(path: &Path, rate: u32) -> Vec<f64> {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.channels, 1, "mono");
    assert_eq!(spec.sample_rate, rate);
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    r.samples::<i16>()
        .map(|s| f64::from(s.unwrap()) / 32768.0)
        .collect()
}

/// SNR (dB) of `got` against `amplitude * sin(2 pi freq n / rate)`, leaving out 20 ms at both ends
/// (the abrupt start and end of the test tone ring in any band-limited filter). With `fit_phase`,
/// the reference's amplitude and phase are fitted first (for the asynchronous engine, whose delay is
/// reported to the nearest sample).
fn snr_db(got: &[f64], freq: f64, rate: u32, amplitude: f64, fit_phase: bool) -> f64 {
    let edge = rate as usize / 50;
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let body = edge..got.len() - edge;
    let (s, c) = if fit_phase {
        let (mut s, mut c) = (0.0, 0.0);
        for n in body.clone() {
            s += got[n] * (w * n as f64).sin();
            c += got[n] * (w * n as f64).cos();
        }
        let scale = 2.0 / body.len() as f64;
        (s * scale, c * scale)
    } else {
        (amplitude, 0.0)
    };
    let (mut signal, mut noise) = (0.0, 0.0);
    for n in body {
        let ideal = s * (w * n as f64).sin() + c * (w * n as f64).cos();
        signal += ideal * ideal;
        noise += (got[n] - ideal).powi(2);
    }
    10.0 * (signal / noise).log10()
}

struct Case {
    rate_in: u32,
    rate_out: u32,
    format: Format,
    /// Per-channel amplitudes of the same 1 kHz tone; the expected mono amplitude is their mean.
    amplitudes: &'static [f64],
    seconds: f64,
    /// Lowest acceptable SNR (PCM16 output bounds it near 90 dB for a half-scale tone).
    min_snr: f64,
    fit_phase: bool,
}

fn check(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    let output = dir.path().join("out.wav");
    let frames = (f64::from(case.rate_in) * case.seconds) as usize;
    let freq = 1000.0;
    let channels: Vec<Vec<f64>> = case
        .amplitudes
        .iter()
        .map(|&a| sine(freq, case.rate_in, frames, a))
        .collect();
    write_wav(&input, case.rate_in, case.format, &channels);

    let result = convert(&input, &output, &case.rate_out.to_string());
    assert!(
        result.status.success(),
        "{case:?}: {}",
        String::from_utf8_lossy(&result.stderr),
        case = (case.rate_in, case.rate_out, case.format)
    );
    let got = read_output(&output, case.rate_out);
    let expected_len = Resampler::expected_len(case.rate_in, case.rate_out, frames as u64);
    assert_eq!(
        got.len() as u64,
        expected_len,
        "{} -> {}",
        case.rate_in,
        case.rate_out
    );
    let amplitude = case.amplitudes.iter().sum::<f64>() / case.amplitudes.len() as f64;
    let snr = snr_db(&got, freq, case.rate_out, amplitude, case.fit_phase);
    assert!(
        snr >= case.min_snr,
        "{} -> {} ({:?}): SNR {snr:.1} dB",
        case.rate_in,
        case.rate_out,
        case.format
    );
}

#[test]
fn stereo_float_44k1_to_24k_mono_pcm16() {
    check(Case {
        rate_in: 44100,
        rate_out: 24000,
        format: Format::Float32,
        // Different levels per channel: the downmix must average them.
        amplitudes: &[0.6, 0.2],
        seconds: 1.5,
        min_snr: 80.0,
        fit_phase: false,
    });
}

#[test]
fn mono_pcm16_48k_to_8k() {
    check(Case {
        rate_in: 48000,
        rate_out: 8000,
        format: Format::Int(16),
        amplitudes: &[0.5],
        seconds: 1.0,
        min_snr: 80.0,
        fit_phase: false,
    });
}

#[test]
fn stereo_pcm24_16k_to_24k() {
    check(Case {
        rate_in: 16000,
        rate_out: 24000,
        format: Format::Int(24),
        amplitudes: &[0.5, 0.5],
        seconds: 0.7,
        min_snr: 80.0,
        fit_phase: false,
    });
}

#[test]
fn pcm32_22050_to_48k() {
    check(Case {
        rate_in: 22050,
        rate_out: 48000,
        format: Format::Int(32),
        amplitudes: &[0.5],
        seconds: 0.5,
        min_snr: 80.0,
        fit_phase: false,
    });
}

#[test]
fn rates_outside_the_supported_set() {
    // 96 kHz -> 44.1 kHz and 11025 Hz -> 16 kHz take rubato's asynchronous sinc engine;
    // 32 kHz -> 16 kHz the FIR.
    for (rate_in, rate_out, fit_phase) in [
        (96000, 44100, true),
        (11025, 16000, true),
        (32000, 16000, false),
    ] {
        check(Case {
            rate_in,
            rate_out,
            format: Format::Int(16),
            amplitudes: &[0.5],
            seconds: 0.5,
            min_snr: 65.0,
            fit_phase,
        });
    }
}

#[test]
fn a_long_file_is_streamed_in_chunks() {
    // Several times the converter's read chunk, so chunk edges fall inside the file.
    check(Case {
        rate_in: 48000,
        rate_out: 16000,
        format: Format::Int(16),
        amplitudes: &[0.5, 0.5],
        seconds: 6.0,
        min_snr: 80.0,
        fit_phase: false,
    });
}

fn assert_fails(result: &Output, needles: &[&str]) {
    assert!(!result.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&result.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nope.wav");
    let output = dir.path().join("out.wav");
    let result = convert(&missing, &output, "16000");
    assert_fails(&result, &["failed to read WAV file", "nope.wav"]);
    assert!(!output.exists());
}

#[test]
fn non_wav_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.wav");
    std::fs::write(
        &input,
        "this is not audio, just text pretending to be a WAV file\n",
    )
    .unwrap();
    let output = dir.path().join("out.wav");
    let result = convert(&input, &output, "16000");
    assert_fails(&result, &["failed to read WAV file", "notes.wav", "WAV"]);
    assert!(!output.exists());
}

#[test]
fn rate_zero_and_non_numeric_rates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    write_wav(
        &input,
        16000,
        Format::Int(16),
        &[sine(1000.0, 16000, 1600, 0.5)],
    );
    let output = dir.path().join("out.wav");
    assert_fails(&convert(&input, &output, "0"), &["--rate 0"]);
    assert_fails(&convert(&input, &output, "fast"), &["--rate"]);
    assert_fails(&convert(&input, &output, "5000000"), &["5000000 Hz"]);
    assert!(!output.exists());
}

#[test]
fn converting_a_file_onto_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    write_wav(
        &input,
        16000,
        Format::Int(16),
        &[sine(1000.0, 16000, 1600, 0.5)],
    );
    let before = std::fs::read(&input).unwrap();
    assert_fails(&convert(&input, &input, "8000"), &["same file"]);
    assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");
}
