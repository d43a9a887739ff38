//! `Vad::process` makes no heap allocation once `events` has spare capacity.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use voxgate_dsp::vad::{Vad, VadConfig};

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

        COUNTING.store(true, Ordering::SeqCst);
        for chunk in signal.chunks(rate as usize / 50 + 3) {
            vad.process(chunk, &mut events);
        }
        vad.process(&signal[..1], &mut events);
        COUNTING.store(false, Ordering::SeqCst);

        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            0,
            "allocations at {rate} Hz"
        );
        assert!(events.len() <= 16);
    }
}
