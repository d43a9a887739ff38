//! The Opus hot path makes no heap allocation (on the Rust side; libopus itself works on the stack
//! and in the state allocated at construction).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use voxgate_dsp::codec::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig};

/// Counts allocations while `COUNTING` is set. This file holds a single test, so no other thread
/// allocates while it counts.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's: `layout` has a non-zero size.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

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

        COUNTING.store(true, Ordering::SeqCst);
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
        COUNTING.store(false, Ordering::SeqCst);

        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            0,
            "allocations at {rate} Hz"
        );
    }
}
