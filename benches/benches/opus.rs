//! Opus encode and decode cost per 20 ms frame, at 24 kHz and 48 kHz, with the default voice
//! settings (32 kbit/s, in-band FEC at 10 % expected loss, complexity 10).
//!
//! The input is a speech-like signal (a glottal-pulse train through formant resonators, with
//! syllabic amplitude modulation) rather than noise or a sine: Opus' speech modes do very different
//! work on those. `cargo bench -p voxgate-benches --bench opus`; criterion reports time per frame.

use std::f32::consts::PI;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use voxgate_dsp::codec::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig};

/// Two seconds of a synthetic vowel-like signal at `rate`: a 120 Hz pulse train (with slight
/// vibrato) through three two-pole resonators at typical formant frequencies, amplitude-modulated
/// at 4 Hz.
fn speech_like(rate: u32) -> Vec<f32> {
    let fs = rate as f32;
    let formants = [(700.0f32, 130.0f32), (1220.0, 70.0), (2600.0, 160.0)];
    let mut resonators: Vec<(f32, f32, f32, f32)> = formants
        .iter()
        .map(|&(freq, bandwidth)| {
            let r = (-PI * bandwidth / fs).exp();
            (2.0 * r * (2.0 * PI * freq / fs).cos(), -r * r, 0.0, 0.0)
        })
        .collect();
    let mut phase = 0.0f32;
    (0..rate as usize * 2)
        .map(|n| {
            let t = n as f32 / fs;
            let f0 = 120.0 + 6.0 * (2.0 * PI * 5.0 * t).sin();
            phase += f0 / fs;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            let mut y = 0.0;
            for (a1, a2, y1, y2) in &mut resonators {
                let out = pulse + *a1 * *y1 + *a2 * *y2;
                *y2 = *y1;
                *y1 = out;
                y += out;
            }
            let envelope = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
            y * envelope
        })
        .collect()
}

fn normalised(mut signal: Vec<f32>) -> Vec<f32> {
    let peak = signal.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    for s in &mut signal {
        *s *= 0.5 / peak;
    }
    signal
}

fn bench_opus(c: &mut Criterion) {
    let mut group = c.benchmark_group("opus");
    group.throughput(Throughput::Elements(1));
    for rate in [24_000u32, 48_000] {
        let signal = normalised(speech_like(rate));
        let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
        let frame = encoder.frame_samples();
        let frames: Vec<&[f32]> = signal.chunks_exact(frame).collect();
        let mut packet = [0u8; MAX_PACKET_BYTES];

        // Encode: cycle through the frames so the encoder sees a changing signal, as in a call.
        let mut next = 0;
        group.bench_function(BenchmarkId::new("encode_20ms", rate), |b| {
            b.iter(|| {
                let len = encoder
                    .encode_into(black_box(frames[next]), &mut packet)
                    .unwrap();
                next = (next + 1) % frames.len();
                black_box(len)
            })
        });

        // The same at complexity 5, the usual trade-off for servers that encode many streams.
        let mut encoder = OpusEncoder::new(
            rate,
            OpusEncoderConfig {
                complexity: 5,
                ..OpusEncoderConfig::default()
            },
        )
        .unwrap();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("encode_20ms_complexity5", rate), |b| {
            b.iter(|| {
                let len = encoder
                    .encode_into(black_box(frames[next]), &mut packet)
                    .unwrap();
                next = (next + 1) % frames.len();
                black_box(len)
            })
        });

        // Decode: the packets of the whole signal, in order, wrapping around.
        let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
        let packets: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let len = encoder.encode_into(f, &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect();
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let mut out = vec![0.0f32; frame];
        let mut next = 0;
        group.bench_function(BenchmarkId::new("decode_20ms", rate), |b| {
            b.iter(|| {
                let n = decoder
                    .decode_into(black_box(&packets[next]), &mut out)
                    .unwrap();
                next = (next + 1) % packets.len();
                black_box(n)
            })
        });

        // Concealment of a lost frame, the jitter buffer's gap path. Each iteration decodes a real
        // packet first, so concealment always extrapolates fresh speech (after a few lost frames in
        // a row libopus fades to silence, which is cheaper and not representative). Subtract
        // `decode_20ms` for the concealment alone.
        group.bench_function(BenchmarkId::new("decode_then_conceal_40ms", rate), |b| {
            b.iter(|| {
                decoder.decode_into(&packets[next], &mut out).unwrap();
                next = (next + 1) % packets.len();
                black_box(decoder.conceal_into(&mut out).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_opus);
criterion_main!(benches);
