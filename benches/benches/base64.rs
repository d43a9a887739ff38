//! Base64 encode and decode throughput (in raw bytes) for one audio frame and for a long upload.
//!
//! 3840 bytes is 80 ms of PCM16 at 24 kHz, the order of one `input_audio_buffer.append`; 1 MiB is a
//! whole clip. `cargo bench -p voxgate-benches --bench base64`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_dsp::b64;

const SIZES: [(usize, &str); 3] = [
    (3840, "80ms_pcm16_24k"),
    (4 << 10, "4KiB"),
    (1 << 20, "1MiB"),
];

fn base64(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    for (len, label) in SIZES {
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        let encoded = b64::encode(&data);
        let mut text = String::with_capacity(encoded.len());
        let mut bytes = Vec::with_capacity(len);

        let mut group = c.benchmark_group(format!("base64/{label}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("encode_into", |b| {
            b.iter(|| b64::encode_into(black_box(&data), &mut text));
        });
        group.bench_function("decode_into", |b| {
            b.iter(|| b64::decode_into(black_box(&encoded), &mut bytes).unwrap());
        });
        group.bench_function("encode_alloc", |b| b.iter(|| b64::encode(black_box(&data))));
        group.bench_function("decode_alloc", |b| {
            b.iter(|| b64::decode(black_box(&encoded)).unwrap());
        });
        group.finish();
    }
}

criterion_group!(benches, base64);
criterion_main!(benches);
