//! Arbitrary bytes as Opus packets, at 24 kHz and 48 kHz.
//!
//! Invariants: `decode_into` returns `Ok(n)` with `n` a whole number of 2.5 ms Opus frames that
//! fits the output (20 ms for our own packets; other valid durations up to 120 ms) and only finite
//! samples within [-1, 1], or an error; the same holds for FEC recovery from the packet; and
//! whatever was fed, the decoder afterwards still decodes a real packet of a known frame to a full
//! frame.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use voxgate_dsp::codec::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig};

/// A valid packet per rate (a 440 Hz tone encoded once), and the energy of its third decode on a
/// fresh decoder, for the "still works" check.
struct Known {
    packet: Vec<u8>,
    energy: f32,
}

fn known(rate: u32) -> &'static Known {
    static KNOWN: OnceLock<[Known; 2]> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        [24_000, 48_000].map(|rate| {
            let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
            let frame: Vec<f32> = (0..encoder.frame_samples())
                .map(|n| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / rate as f32).sin())
                .collect();
            let mut packet = [0u8; MAX_PACKET_BYTES];
            let len = encoder.encode_into(&frame, &mut packet).unwrap();
            let packet = packet[..len].to_vec();
            let mut decoder = OpusDecoder::new(rate).unwrap();
            let mut out = vec![0.0; encoder.frame_samples()];
            for _ in 0..3 {
                decoder.decode_into(&packet, &mut out).unwrap();
            }
            Known {
                packet,
                energy: energy(&out),
            }
        })
    });
    &known[usize::from(rate == 48_000)]
}

fn energy(samples: &[f32]) -> f32 {
    samples.iter().map(|s| s * s).sum()
}

/// The decoder soft-clips its output into [-1, 1] (see the `codec::opus` docs): garbage packets
/// that parse can otherwise decode to values in the hundreds of thousands.
const MAX_MAGNITUDE: f32 = 1.0;

fn check_samples(samples: &[f32]) {
    for &s in samples {
        assert!(s.is_finite() && s.abs() <= MAX_MAGNITUDE, "sample {s}");
    }
}

fuzz_target!(|data: &[u8]| {
    for rate in [24_000u32, 48_000] {
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let frame = decoder.frame_samples();
        let quantum = rate as usize / 400; // 2.5 ms, the shortest Opus frame
        let mut out = vec![0.0f32; decoder.max_packet_samples()];

        // The input may hold several packets: split on a length byte so the decoder sees sequences
        // (state carried from one garbage packet to the next).
        let mut rest = data;
        while !rest.is_empty() {
            let len = usize::from(rest[0]).min(rest.len() - 1);
            let packet = &rest[1..1 + len];
            rest = &rest[1 + len..];

            // An error is a valid outcome for garbage; a success must be a sane decode.
            if let Ok(n) = decoder.decode_into(packet, &mut out) {
                assert!(n > 0 && n <= out.len() && n % quantum == 0, "n = {n}");
                check_samples(&out[..n]);
            }
            // A one-frame buffer: either the packet fits in 20 ms or it is refused.
            if let Ok(n) = decoder.decode_into(packet, &mut out[..frame]) {
                assert!(n <= frame && n % quantum == 0, "n = {n}");
            }
            if let Ok(n) = decoder.decode_fec_into(packet, &mut out) {
                assert_eq!(n, frame);
                check_samples(&out[..frame]);
            }
            let n = decoder.conceal_into(&mut out).unwrap();
            assert_eq!(n, frame);
            check_samples(&out[..frame]);
        }

        // The decoder still works: the known packet decodes to exactly one frame, and after a few
        // repetitions (enough for any garbage state to wash out) carries the tone's energy, as it
        // does on a fresh decoder.
        let known = known(rate);
        for _ in 0..3 {
            let n = decoder.decode_into(&known.packet, &mut out).unwrap();
            assert_eq!(n, frame);
            check_samples(&out[..n]);
        }
        let recovered = energy(&out[..frame]);
        assert!(
            recovered > 0.25 * known.energy,
            "decoder did not recover: energy {recovered} vs {}",
            known.energy
        );
    }
});
