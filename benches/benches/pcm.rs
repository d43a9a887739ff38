//! PCM conversion throughput per kernel, next to a plain `copy_from_slice` of the same PCM16 bytes.
//!
//! Throughput is counted in PCM16 bytes (the payload size on the wire) in both directions, so each
//! kernel's GB/s reads directly as a fraction of memcpy. Note that decoding writes twice as many
//! bytes as it reads (f32 out) and encoding reads twice as many as it writes, so "memcpy speed" is
//! not a hard ceiling but a yardstick. `cargo bench -p voxgate-benches --bench pcm`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_dsp::pcm::{
    Kernel, f32_to_pcm16le, f32_to_pcm16le_with, pcm16le_to_f32, pcm16le_to_f32_with,
};

/// Buffer sizes in PCM16 bytes: one that stays in L2, one that spills to L3/memory.
const SIZES: [(usize, &str); 2] = [(64 << 10, "64KiB"), (1 << 20, "1MiB")];

fn decode(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    for (bytes_len, label) in SIZES {
        let mut bytes = vec![0u8; bytes_len];
        rng.fill(&mut bytes[..]);
        let mut samples = vec![0.0f32; bytes_len / 2];
        let mut copy = vec![0u8; bytes_len];

        let mut group = c.benchmark_group(format!("pcm16le_to_f32/{label}"));
        group.throughput(Throughput::Bytes(bytes_len as u64));
        group.bench_function("memcpy", |b| {
            b.iter(|| copy.copy_from_slice(black_box(&bytes)));
        });
        for kernel in Kernel::available() {
            group.bench_function(BenchmarkId::from_parameter(kernel.name()), |b| {
                b.iter(|| pcm16le_to_f32_with(kernel, black_box(&bytes), &mut samples).unwrap());
            });
        }
        group.bench_function("dispatched", |b| {
            b.iter(|| pcm16le_to_f32(black_box(&bytes), &mut samples).unwrap());
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    for (bytes_len, label) in SIZES {
        // Mostly in range, some clipping: what a mixer's output looks like.
        let samples: Vec<f32> = (0..bytes_len / 2)
            .map(|_| rng.random_range(-1.1f32..1.1))
            .collect();
        let source = vec![0x5Au8; bytes_len];
        let mut bytes = vec![0u8; bytes_len];

        let mut group = c.benchmark_group(format!("f32_to_pcm16le/{label}"));
        group.throughput(Throughput::Bytes(bytes_len as u64));
        group.bench_function("memcpy", |b| {
            b.iter(|| bytes.copy_from_slice(black_box(&source)));
        });
        for kernel in Kernel::available() {
            group.bench_function(BenchmarkId::from_parameter(kernel.name()), |b| {
                b.iter(|| f32_to_pcm16le_with(kernel, black_box(&samples), &mut bytes).unwrap());
            });
        }
        group.bench_function("dispatched", |b| {
            b.iter(|| f32_to_pcm16le(black_box(&samples), &mut bytes).unwrap());
        });
        group.finish();
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
