//! Jitter buffer cost per 480-sample frame (20 ms at 24 kHz): one push plus one pop, in order and
//! with reordering and loss, and the SPSC ring moving the same frame for comparison.
//! `cargo bench -p voxgate-benches --bench jitter`; criterion reports time per frame.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxgate_dsp::jitter::{JitterBuffer, JitterConfig};
use voxgate_dsp::ring::AudioRing;

const FRAME: usize = 480;

fn jitter(c: &mut Criterion) {
    let frame: Vec<f32> = (0..FRAME).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut out = vec![0.0f32; FRAME];
    let mut group = c.benchmark_group("jitter/480");
    group.throughput(Throughput::Elements(1));

    group.bench_function("push_pop_in_order", |b| {
        let mut jb = JitterBuffer::new(JitterConfig::new(FRAME, 3, 50)).unwrap();
        let mut seq = 0u16;
        b.iter(|| {
            jb.push(seq, black_box(&frame)).unwrap();
            seq = seq.wrapping_add(1);
            black_box(jb.pop(&mut out).unwrap());
        });
    });

    group.bench_function("push_pop_reordered_5pct_loss", |b| {
        let mut jb = JitterBuffer::new(JitterConfig::new(FRAME, 3, 50)).unwrap();
        let mut n = 0u32;
        b.iter(|| {
            // Swap each pair of frames and drop one in twenty: concealment runs too.
            let seq = (n ^ 1) as u16;
            if n % 20 != 7 {
                black_box(jb.push(seq, black_box(&frame)).unwrap());
            }
            n = n.wrapping_add(1);
            black_box(jb.pop(&mut out).unwrap());
        });
    });

    group.bench_function("ring_push_pop", |b| {
        let (mut producer, mut consumer) = AudioRing::new::<f32>(FRAME * 8);
        b.iter(|| {
            producer.push_slice(black_box(&frame));
            black_box(consumer.pop_slice(&mut out));
        });
    });
    group.finish();
}

criterion_group!(benches, jitter);
criterion_main!(benches);
