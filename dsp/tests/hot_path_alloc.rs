//! The realtime hot paths of the Opus codec and the VAD make no heap allocation (on the Rust side; libopus
//! works on the stack and in the state allocated at construction).

#[path = "support/alloc_counter.rs"]
mod alloc_counter;
use alloc_counter::allocations;

use voxgate_dsp::codec::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use voxgate_dsp::vad::{Vad, VadConfig};

#[test]
fn encode_decode_conceal_and_fec_do_not_allocate() {
    for rate in [24_000, 48_000] {
        let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let frame = encoder.frame_samples();
        let signal: Vec<f32> = (0..frame * 10)
            .map(|n| 0.3 * (n as f32 * 0.05).sin() * (n as f32 * 0.001).cos())
            .collect();
        let mut packets = [[0u8; MAX_PACKET_BYTES]; 10];
        let mut lens = [0usize; 10];
        let mut out = vec![0.0f32; decoder.max_packet_samples()];

        let before = allocations();
        for (i, chunk) in signal.chunks_exact(frame).enumerate() {
            lens[i] = encoder.encode_into(chunk, &mut packets[i]).unwrap();
        }
        for i in 0..10 {
            if i == 5 {
                decoder
                    .decode_fec_into(&packets[6][..lens[6]], &mut out)
                    .unwrap();
            } else if i == 7 {
                decoder.conceal_into(&mut out).unwrap();
            } else {
                decoder
                    .decode_into(&packets[i][..lens[i]], &mut out)
                    .unwrap();
            }
        }
        // Errors are allocation-free too.
        assert!(decoder.decode_into(&[0xfb, 0x00], &mut out).is_err());
        assert!(
            encoder
                .encode_into(&signal[..frame - 1], &mut packets[0])
                .is_err()
        );
        let allocated = allocations() - before;

        assert_eq!(allocated, 0, "allocations at {rate} Hz");
    }
}

#[test]
fn process_does_not_allocate() {
    for rate in [8_000, 16_000, 24_000, 48_000] {
        let mut vad = Vad::new(VadConfig::default(), rate).unwrap();
        // A tone burst between silences: the detector runs its whole state machine, events
        // included.
        let mut signal = vec![0.0f32; rate as usize];
        signal.extend((0..rate as usize).map(|n| {
            let t = n as f32 / rate as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                * (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin())
        }));
        signal.extend(std::iter::repeat_n(0.0, rate as usize));
        let mut events = Vec::with_capacity(16);

        let before = allocations();
        for chunk in signal.chunks(rate as usize / 50 + 3) {
            vad.process(chunk, &mut events);
        }
        vad.process(&signal[..1], &mut events);
        let allocated = allocations() - before;

        assert_eq!(allocated, 0, "allocations at {rate} Hz");
        assert!(events.len() <= 16);
    }
}
