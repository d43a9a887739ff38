//! Streaming resampler throughput in 20 ms chunks, the gateway's frame size.
//!
//! Throughput is counted in input samples, so criterion's "elem/s" divided by the input rate is the
//! "x realtime" figure for one core; a summary line per conversion prints it directly. rubato's `Fft`
//! resampler (the generic engine) runs on the same chunks as a baseline.
//! `cargo bench -p voxgate-benches --bench resample -- --warm-up-time 1 --measurement-time 3`;
//! `benches/soxr_compare.py` runs libsoxr on the same conversions.

use std::hint::black_box;
use std::time::{Duration, Instant};

use audioadapter_buffers::direct::SequentialSlice;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rubato::{Fft, FixedSync, Resampler as _};
use voxgate_dsp::resample::Resampler;

/// The three conversions the gateway runs on every frame, plus one on the rubato engine.
const PAIRS: [(u32, u32); 4] = [
    (48000, 24000),
    (16000, 24000),
    (24000, 16000),
    (44100, 24000),
];

/// One second of speech-like test signal: a few tones and noise.
fn signal(rate: u32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(u64::from(rate));
    (0..rate as usize)
        .map(|n| {
            let t = n as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * 1800.0 * t).sin()
                + rng.random_range(-0.05f32..0.05)
        })
        .collect()
}

/// A `Resampler` fed one 20 ms chunk per call, cycling through one second of input.
struct OursRunner {
    resampler: Resampler,
    input: Vec<f32>,
    chunk: usize,
    pos: usize,
    out: Vec<f32>,
}

impl OursRunner {
    fn new(in_rate: u32, out_rate: u32) -> Self {
        let resampler = Resampler::new(in_rate, out_rate).expect("supported pair");
        let chunk = in_rate as usize / 50;
        let out = Vec::with_capacity(resampler.max_output_len(chunk));
        OursRunner {
            resampler,
            input: signal(in_rate),
            chunk,
            pos: 0,
            out,
        }
    }

    fn step(&mut self) {
        if self.pos + self.chunk > self.input.len() {
            self.pos = 0;
        }
        self.out.clear();
        self.resampler.process_into(
            black_box(&self.input[self.pos..self.pos + self.chunk]),
            &mut self.out,
        );
        black_box(&self.out);
        self.pos += self.chunk;
    }
}

/// rubato's `Fft` with a fixed 20 ms input chunk, the way a caller would use it directly.
struct RubatoRunner {
    fft: Fft<f32>,
    input: Vec<f32>,
    chunk: usize,
    pos: usize,
    out: Vec<f32>,
}

impl RubatoRunner {
    fn new(in_rate: u32, out_rate: u32) -> Self {
        let chunk = in_rate as usize / 50;
        let fft = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            chunk,
            1,
            FixedSync::Input,
        )
        .expect("valid rates");
        let out = vec![0.0; fft.output_frames_max()];
        RubatoRunner {
            fft,
            input: signal(in_rate),
            chunk,
            pos: 0,
            out,
        }
    }

    fn step(&mut self) {
        if self.pos + self.chunk > self.input.len() {
            self.pos = 0;
        }
        let input =
            SequentialSlice::new(&self.input[self.pos..self.pos + self.chunk], 1, self.chunk)
                .expect("one chunk");
        let frames = self.out.len();
        let mut output = SequentialSlice::new_mut(&mut self.out[..], 1, frames).expect("sized");
        let done = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .expect("sized buffers");
        black_box(done);
        self.pos += self.chunk;
    }
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`), or `None` elsewhere.
///
/// The summary counts CPU time rather than wall time so that the figure means "per core" even on a
/// machine shared with other work (a busy CI box would otherwise halve it).
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Input samples per second of one core over about `budget` of wall time, divided by the input rate.
fn times_realtime(in_rate: u32, budget: Duration, step: &mut dyn FnMut()) -> f64 {
    let chunk = in_rate as usize / 50;
    for _ in 0..200 {
        step();
    }
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut chunks = 0u64;
    while start.elapsed() < budget {
        for _ in 0..100 {
            step();
        }
        chunks += 100;
    }
    let seconds = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
        _ => start.elapsed().as_secs_f64(),
    };
    let per_second = (chunks * chunk as u64) as f64 / seconds;
    per_second / f64::from(in_rate)
}

/// SNR (dB) of a 1 kHz sine (amplitude 0.5, 1 s) through `in_rate -> out_rate` in 20 ms chunks
/// against the ideal sine, with the reported delay removed and the first and last 20 ms left out
/// (the abrupt start and end ring in any band-limited filter). `soxr_compare.py` measures libsoxr
/// the same way.
fn sine_snr_db(in_rate: u32, out_rate: u32) -> f64 {
    let w_in = 2.0 * std::f64::consts::PI * 1000.0 / f64::from(in_rate);
    let w_out = 2.0 * std::f64::consts::PI * 1000.0 / f64::from(out_rate);
    let input: Vec<f32> = (0..in_rate as usize)
        .map(|n| (0.5 * (w_in * n as f64).sin()) as f32)
        .collect();
    let mut r = Resampler::new(in_rate, out_rate).expect("supported pair");
    let mut out = Vec::new();
    for chunk in input.chunks(in_rate as usize / 50) {
        r.process_into(chunk, &mut out);
    }
    r.flush_into(&mut out);
    let aligned = &out[r.delay()..];
    let edge = out_rate as usize / 50;
    let (mut signal, mut noise) = (0.0, 0.0);
    for (n, &v) in aligned
        .iter()
        .enumerate()
        .take(aligned.len() - edge)
        .skip(edge)
    {
        let ideal = 0.5 * (w_out * n as f64).sin();
        signal += ideal * ideal;
        noise += (f64::from(v) - ideal).powi(2);
    }
    10.0 * (signal / noise).log10()
}

fn resample(c: &mut Criterion) {
    for (in_rate, out_rate) in PAIRS {
        let chunk = in_rate as usize / 50;
        let mut group = c.benchmark_group(format!("resample_20ms/{in_rate}->{out_rate}"));
        group.throughput(Throughput::Elements(chunk as u64));
        let mut ours = OursRunner::new(in_rate, out_rate);
        group.bench_function("voxgate", |b| b.iter(|| ours.step()));
        let mut rubato = RubatoRunner::new(in_rate, out_rate);
        group.bench_function("rubato_fft", |b| b.iter(|| rubato.step()));
        group.finish();
    }

    // The headline figure, measured the same way for both engines.
    println!(
        "\nx realtime per core, 20 ms chunks (input samples per CPU-second of this thread / input rate):"
    );
    for (in_rate, out_rate) in PAIRS {
        let mut ours = OursRunner::new(in_rate, out_rate);
        let mut rubato = RubatoRunner::new(in_rate, out_rate);
        let budget = Duration::from_millis(700);
        let x_ours = times_realtime(in_rate, budget, &mut || ours.step());
        let x_rubato = times_realtime(in_rate, budget, &mut || rubato.step());
        println!(
            "RESULT {in_rate}->{out_rate} voxgate {x_ours:.0} x realtime ({:?}, delay {} samples, snr {:.1} dB), rubato_fft {x_rubato:.0} x realtime",
            ours.resampler.kind(),
            ours.resampler.delay(),
            sine_snr_db(in_rate, out_rate),
        );
    }
}

criterion_group!(benches, resample);
criterion_main!(benches);
