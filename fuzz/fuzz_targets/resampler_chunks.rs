//! The streaming resampler under arbitrary rate pairs, chunkings and samples.
//!
//! Invariants: chunked output equals one-shot output bit for bit; after each chunk the output is
//! within the documented bound; the flushed total is exactly `delay + expected_len`; every output is
//! finite for finite input; nothing panics.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxgate_dsp::resample::{Resampler, SUPPORTED_RATES};

#[derive(Debug, Arbitrary)]
struct Case {
    from: u8,
    to: u8,
    /// Chunk lengths, cycled until the input is used up (0 means an empty call, then one sample).
    chunks: Vec<u16>,
    /// Raw samples; NaN and infinities are replaced and magnitudes clamped below.
    samples: Vec<f32>,
}

fuzz_target!(|case: Case| {
    let from = SUPPORTED_RATES[usize::from(case.from) % SUPPORTED_RATES.len()];
    let to = SUPPORTED_RATES[usize::from(case.to) % SUPPORTED_RATES.len()];
    // Audio is nominally within [-1, 1]; allow some headroom but keep sums far from overflow.
    let input: Vec<f32> = case
        .samples
        .iter()
        .map(|&x| {
            if x.is_finite() {
                x.clamp(-4.0, 4.0)
            } else {
                0.0
            }
        })
        .collect();

    let mut whole = Resampler::new(from, to).expect("supported pair");
    let mut expected = whole.process(&input);
    whole.flush_into(&mut expected);
    let delay = whole.delay() as u64;
    let total = delay + Resampler::expected_len(from, to, input.len() as u64);
    assert_eq!(
        expected.len() as u64,
        total,
        "{from}->{to}: one-shot length"
    );

    let mut r = Resampler::new(from, to).expect("supported pair");
    let mut out = Vec::new();
    let mut rest = &input[..];
    let mut sizes = case.chunks.iter().cycle();
    while !rest.is_empty() {
        // With no chunk sizes given, fall back to single samples.
        let mut n = sizes.next().map_or(1, |&s| usize::from(s)).min(rest.len());
        if n == 0 {
            let before = out.len();
            r.process_into(&[], &mut out);
            assert_eq!(
                out.len(),
                before,
                "{from}->{to}: output from an empty chunk"
            );
            n = 1;
        }
        let before = out.len();
        r.process_into(&rest[..n], &mut out);
        assert!(
            out.len() - before <= r.max_output_len(n),
            "{from}->{to}: {} samples from a chunk of {n}",
            out.len() - before
        );
        rest = &rest[n..];
        // Never more than the whole stream will have.
        let fed = input.len() - rest.len();
        let bound = delay + Resampler::expected_len(from, to, fed as u64) + 1;
        assert!(out.len() as u64 <= bound, "{from}->{to}: ran ahead");
    }
    let before = out.len();
    r.flush_into(&mut out);
    assert!(
        out.len() - before <= r.max_flush_len(),
        "{from}->{to}: flush too long"
    );
    assert_eq!(out.len() as u64, total, "{from}->{to}: chunked length");
    assert!(
        out.iter().all(|x| x.is_finite()),
        "{from}->{to}: non-finite output"
    );
    let same = out
        .iter()
        .zip(&expected)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{from}->{to}: chunked output differs from one shot");
});
