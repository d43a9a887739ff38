//! The jitter buffer: ordering, duplicates, late frames, loss and concealment, overflow, underrun,
//! sequence wrap-around, resync, accounting, and a producer thread feeding a consumer thread.

use std::sync::mpsc;
use std::thread;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use voxgate_dsp::jitter::{
    FadeRepeat, JitterBuffer, JitterConfig, JitterConfigError, JitterError, PopKind, PushOutcome,
    SilenceConcealer,
};

const FRAME: usize = 4;

/// A frame whose every sample is the (unwrapped) sequence number it was sent with, plus 1 so that
/// no frame is all zeros like silence.
fn frame(id: u32) -> [f32; FRAME] {
    [(id + 1) as f32; FRAME]
}

fn buffer(target: usize, max: usize) -> JitterBuffer {
    JitterBuffer::new(JitterConfig::new(FRAME, target, max)).unwrap()
}

/// Pushes frame `id` under sequence number `id as u16`.
fn push(jb: &mut JitterBuffer<impl voxgate_dsp::jitter::Concealer>, id: u32) -> PushOutcome {
    jb.push(id as u16, &frame(id)).unwrap()
}

/// Pops once; a played frame is reported by its id.
#[derive(Debug, PartialEq)]
enum Out {
    Frame(u32),
    Concealed,
    Silence,
}

fn pop(jb: &mut JitterBuffer<impl voxgate_dsp::jitter::Concealer>) -> Out {
    let mut out = [f32::NAN; FRAME];
    match jb.pop(&mut out).unwrap() {
        PopKind::Frame => {
            assert!(out.iter().all(|&x| x == out[0]), "{out:?}");
            Out::Frame(out[0] as u32 - 1)
        }
        PopKind::Concealed => Out::Concealed,
        PopKind::Silence => {
            assert_eq!(out, [0.0; FRAME]);
            Out::Silence
        }
    }
}

/// The accounting identities from the module docs.
fn check_accounting<C: voxgate_dsp::jitter::Concealer>(
    jb: &JitterBuffer<C>,
    pushes: u64,
    pops: u64,
) {
    let s = jb.stats();
    assert_eq!(s.received + s.duplicates + s.late, pushes, "{s:?}");
    assert_eq!(
        s.received,
        s.played + s.overruns + s.flushed + jb.buffered_len() as u64,
        "{s:?}"
    );
    assert_eq!(s.played + s.concealed + s.silence, pops, "{s:?}");
}

#[test]
fn in_order_frames_play_after_prebuffering() {
    let mut jb = buffer(3, 8);
    assert_eq!(pop(&mut jb), Out::Silence, "nothing received yet");
    assert_eq!(push(&mut jb, 100), PushOutcome::Stored);
    assert_eq!(pop(&mut jb), Out::Silence);
    push(&mut jb, 101);
    assert_eq!(pop(&mut jb), Out::Silence, "span 2 < target 3");
    push(&mut jb, 102);
    assert_eq!(jb.span(), 3);
    assert_eq!(pop(&mut jb), Out::Frame(100));
    assert!(jb.is_playing());
    for id in 103..110 {
        push(&mut jb, id);
        assert_eq!(pop(&mut jb), Out::Frame(id - 2));
    }
    let s = jb.stats();
    assert_eq!(
        (s.played, s.lost, s.concealed, s.silence, s.underruns),
        (8, 0, 0, 3, 0)
    );
    check_accounting(&jb, 10, 11);
}

#[test]
fn reordering_within_the_depth_is_undone() {
    let mut jb = buffer(4, 16);
    let arrival = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10];
    let mut played = Vec::new();
    for &id in &arrival {
        assert_eq!(push(&mut jb, id), PushOutcome::Stored);
        if let Out::Frame(id) = pop(&mut jb) {
            played.push(id);
        }
    }
    while jb.buffered_len() > 0 {
        if let Out::Frame(id) = pop(&mut jb) {
            played.push(id);
        }
    }
    assert_eq!(played, (0..12).collect::<Vec<_>>());
    assert_eq!(jb.stats().lost, 0);
}

#[test]
fn frames_older_than_the_first_are_kept_before_playout_starts() {
    let mut jb = buffer(3, 8);
    push(&mut jb, 12);
    push(&mut jb, 10); // Arrived late but playout has not started: widens the window back.
    assert_eq!(jb.span(), 3);
    push(&mut jb, 11);
    assert_eq!(
        [pop(&mut jb), pop(&mut jb), pop(&mut jb)],
        [Out::Frame(10), Out::Frame(11), Out::Frame(12)]
    );
    // Older than the window allows (8 back from the newest): late even before playout.
    let mut jb = buffer(3, 8);
    push(&mut jb, 50);
    assert_eq!(push(&mut jb, 42), PushOutcome::Late);
    assert_eq!(push(&mut jb, 43), PushOutcome::Stored);
}

#[test]
fn duplicates_are_discarded_once_buffered_and_late_once_played() {
    let mut jb = buffer(2, 8);
    push(&mut jb, 0);
    assert_eq!(push(&mut jb, 0), PushOutcome::Duplicate);
    push(&mut jb, 1);
    assert_eq!(push(&mut jb, 1), PushOutcome::Duplicate);
    assert_eq!(pop(&mut jb), Out::Frame(0));
    assert_eq!(push(&mut jb, 0), PushOutcome::Late, "its slot is gone");
    assert_eq!(pop(&mut jb), Out::Frame(1));
    let s = jb.stats();
    assert_eq!((s.duplicates, s.late, s.played, s.received), (2, 1, 2, 2));
    check_accounting(&jb, 5, 2);
}

#[test]
fn late_frames_are_counted_not_played() {
    let mut jb = buffer(2, 8);
    for id in [0, 1, 3] {
        push(&mut jb, id);
    }
    assert_eq!(pop(&mut jb), Out::Frame(0));
    assert_eq!(pop(&mut jb), Out::Frame(1));
    assert_eq!(pop(&mut jb), Out::Concealed, "2 is missing while 3 waits");
    assert_eq!(push(&mut jb, 2), PushOutcome::Late);
    assert_eq!(pop(&mut jb), Out::Frame(3));
    let s = jb.stats();
    assert_eq!((s.late, s.lost, s.concealed, s.played), (1, 1, 1, 3));
}

#[test]
fn lost_frames_are_concealed_by_a_fading_repeat() {
    let mut jb = buffer(1, 8);
    push(&mut jb, 0);
    assert_eq!(pop(&mut jb), Out::Frame(0));
    push(&mut jb, 4); // 1, 2 and 3 never come.
    let mut out = [0.0f32; FRAME];
    let mut previous_end = 1.0f32;
    for missing in 1..=3u32 {
        assert_eq!(jb.pop(&mut out).unwrap(), PopKind::Concealed);
        // Frame 0's samples are 1.0: the output is the fade gain itself, falling linearly from
        // 1 - (k-1)/3 across each frame, and continuous from one frame to the next.
        let start = 1.0 - (missing - 1) as f32 / 3.0;
        assert!((out[0] - start).abs() < 1e-6, "{missing}: {out:?}");
        assert!(
            (out[0] - previous_end).abs() < 0.1,
            "jump between concealed frames"
        );
        assert!(out.windows(2).all(|w| w[1] < w[0]), "{out:?} not fading");
        previous_end = out[FRAME - 1];
    }
    assert_eq!(pop(&mut jb), Out::Frame(4));
    let s = jb.stats();
    assert_eq!((s.lost, s.concealed, s.played), (3, 3, 2));

    // Past the fade length the repeat is silent.
    let mut jb = JitterBuffer::with_concealer(
        JitterConfig::new(FRAME, 1, 8),
        FadeRepeat { fade_frames: 1 },
    )
    .unwrap();
    push(&mut jb, 0);
    pop(&mut jb);
    push(&mut jb, 3);
    jb.pop(&mut out).unwrap();
    assert!(out[0] > 0.9);
    jb.pop(&mut out).unwrap();
    assert_eq!(out, [0.0; FRAME]);
}

#[test]
fn custom_concealers_plug_in() {
    let mut calls = Vec::new();
    {
        let concealer = |last: Option<&[f32]>, consecutive: u32, out: &mut [f32]| {
            calls.push((last.map(|f| f[0]), consecutive));
            out.fill(-0.5);
        };
        let mut jb =
            JitterBuffer::with_concealer(JitterConfig::new(FRAME, 1, 8), concealer).unwrap();
        push(&mut jb, 7);
        push(&mut jb, 10);
        let mut out = [0.0f32; FRAME];
        let kinds: Vec<PopKind> = (0..4).map(|_| jb.pop(&mut out).unwrap()).collect();
        assert_eq!(
            kinds,
            [
                PopKind::Frame,
                PopKind::Concealed,
                PopKind::Concealed,
                PopKind::Frame
            ]
        );
    }
    assert_eq!(calls, [(Some(8.0), 1), (Some(8.0), 2)]);

    let mut jb =
        JitterBuffer::with_concealer(JitterConfig::new(FRAME, 1, 8), SilenceConcealer).unwrap();
    push(&mut jb, 0);
    push(&mut jb, 2);
    let mut out = [1.0f32; FRAME];
    jb.pop(&mut out).unwrap();
    assert_eq!(jb.pop(&mut out).unwrap(), PopKind::Concealed);
    assert_eq!(out, [0.0; FRAME]);
}

#[test]
fn a_burst_beyond_max_depth_drops_the_oldest() {
    let mut jb = buffer(2, 4);
    for id in 0..10 {
        assert_eq!(push(&mut jb, id), PushOutcome::Stored);
    }
    assert_eq!(jb.buffered_len(), 4);
    assert_eq!(jb.span(), 4, "latency bounded by max_depth");
    let s = jb.stats();
    assert_eq!((s.overruns, s.lost), (6, 0));
    let played: Vec<Out> = (0..4).map(|_| pop(&mut jb)).collect();
    assert_eq!(
        played,
        [Out::Frame(6), Out::Frame(7), Out::Frame(8), Out::Frame(9)]
    );
    assert_eq!(push(&mut jb, 5), PushOutcome::Late);

    // A jump far ahead skips the empty slots between as lost.
    let mut jb = buffer(1, 4);
    push(&mut jb, 0);
    push(&mut jb, 1);
    push(&mut jb, 20);
    let s = jb.stats();
    assert_eq!(
        (s.overruns, s.lost),
        (2, 15),
        "0 and 1 dropped, 2..=16 never came"
    );
    assert_eq!(pop(&mut jb), Out::Frame(20));
    assert_eq!(
        jb.stats().lost,
        18,
        "17..=19 skipped when playout started at 20"
    );
    check_accounting(&jb, 3, 1);
}

#[test]
fn underrun_fades_out_then_rebuffers_and_recovers() {
    let mut jb = buffer(2, 8);
    push(&mut jb, 0);
    push(&mut jb, 1);
    assert_eq!([pop(&mut jb), pop(&mut jb)], [Out::Frame(0), Out::Frame(1)]);
    assert_eq!(pop(&mut jb), Out::Concealed, "underrun: one fade-out frame");
    assert!(!jb.is_playing());
    assert_eq!(pop(&mut jb), Out::Silence);
    push(&mut jb, 2); // Frame 2 was only delayed: it is still played.
    assert_eq!(
        pop(&mut jb),
        Out::Silence,
        "rebuffering to the target depth"
    );
    push(&mut jb, 3);
    assert_eq!([pop(&mut jb), pop(&mut jb)], [Out::Frame(2), Out::Frame(3)]);
    let s = jb.stats();
    assert_eq!(
        (s.underruns, s.lost, s.played, s.concealed, s.silence),
        (1, 0, 4, 1, 2)
    );

    // After an underrun where the next frames were really lost, rebuffering counts only what is
    // actually buffered, and playout resumes at the oldest buffered frame instead of concealing
    // the gap after the silence.
    assert_eq!(pop(&mut jb), Out::Concealed, "second underrun");
    push(&mut jb, 10);
    assert_eq!(
        pop(&mut jb),
        Out::Silence,
        "the gap 4..=9 is not buffered latency"
    );
    push(&mut jb, 11);
    assert_eq!(
        [pop(&mut jb), pop(&mut jb)],
        [Out::Frame(10), Out::Frame(11)]
    );
    let s = jb.stats();
    assert_eq!((s.lost, s.underruns), (6, 2), "4..=9 skipped");
    check_accounting(&jb, 6, 11);
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut jb = buffer(3, 16);
    // Ids 65530..65546 are sent as u16 sequence numbers 65530..=65535, 0..=9, with some
    // reordering across the wrap.
    let arrival = [
        65530, 65531, 65533, 65532, 65534, 65536, 65535, 65537, 65539, 65538, 65540, 65541, 65542,
        65543, 65544, 65545,
    ];
    let mut played = Vec::new();
    for &id in &arrival {
        assert_eq!(
            jb.push(id as u16, &frame(id)).unwrap(),
            PushOutcome::Stored,
            "{id}"
        );
        if let Out::Frame(id) = pop(&mut jb) {
            played.push(id);
        }
    }
    while jb.buffered_len() > 0 {
        if let Out::Frame(id) = pop(&mut jb) {
            played.push(id);
        }
    }
    assert_eq!(played, (65530..65546).collect::<Vec<_>>());
    assert_eq!(jb.stats().lost, 0);
    // A duplicate across the wrap is recognised as such.
    let mut jb = buffer(4, 16);
    jb.push(65535, &frame(0)).unwrap();
    jb.push(0, &frame(1)).unwrap();
    assert_eq!(jb.push(65535, &frame(0)).unwrap(), PushOutcome::Duplicate);
}

#[test]
fn a_sender_restart_far_behind_resyncs() {
    let mut config = JitterConfig::new(FRAME, 1, 8);
    config.resync_after = 3;
    let mut jb = JitterBuffer::new(config).unwrap();
    for id in 30_000..30_010 {
        push(&mut jb, id);
        assert_eq!(pop(&mut jb), Out::Frame(id));
    }
    push(&mut jb, 30_010);
    // The sender restarts at 5: 29 995 behind, which unwraps to "late".
    assert_eq!(push(&mut jb, 5), PushOutcome::Late);
    assert_eq!(push(&mut jb, 6), PushOutcome::Late);
    assert_eq!(
        push(&mut jb, 7),
        PushOutcome::Stored,
        "third late frame in a row resyncs"
    );
    push(&mut jb, 8);
    assert_eq!([pop(&mut jb), pop(&mut jb)], [Out::Frame(7), Out::Frame(8)]);
    let s = jb.stats();
    assert_eq!((s.resyncs, s.flushed, s.late), (1, 1, 2));
    check_accounting(&jb, 15, 12);

    // reset() does the same on request.
    push(&mut jb, 9);
    jb.reset();
    assert_eq!(jb.buffered_len(), 0);
    assert_eq!(pop(&mut jb), Out::Silence);
    assert_eq!(jb.stats().flushed, 2);
}

#[test]
fn wrong_lengths_and_bad_configs_are_errors() {
    let mut jb = buffer(2, 8);
    assert_eq!(
        jb.push(0, &[0.0; 3]),
        Err(JitterError::FrameLength {
            expected: 4,
            actual: 3
        })
    );
    let mut out = [0.0f32; 5];
    assert_eq!(
        jb.pop(&mut out),
        Err(JitterError::FrameLength {
            expected: 4,
            actual: 5
        })
    );
    assert_eq!(
        jb.stats(),
        Default::default(),
        "refused calls change nothing"
    );

    let check = |config: JitterConfig, expected: JitterConfigError| {
        assert_eq!(JitterBuffer::new(config).unwrap_err(), expected);
    };
    check(
        JitterConfig::new(0, 1, 1),
        JitterConfigError::ZeroFrameLength,
    );
    check(
        JitterConfig::new(4, 1, 0),
        JitterConfigError::MaxDepthOutOfRange { max_depth: 0 },
    );
    check(
        JitterConfig::new(4, 1, 20_000),
        JitterConfigError::MaxDepthOutOfRange { max_depth: 20_000 },
    );
    check(
        JitterConfig::new(4, 0, 8),
        JitterConfigError::TargetDepthOutOfRange {
            target_depth: 0,
            max_depth: 8,
        },
    );
    check(
        JitterConfig::new(4, 9, 8),
        JitterConfigError::TargetDepthOutOfRange {
            target_depth: 9,
            max_depth: 8,
        },
    );
    check(
        JitterConfig {
            resync_after: 0,
            ..JitterConfig::new(4, 1, 8)
        },
        JitterConfigError::ZeroResyncAfter,
    );
    check(
        JitterConfig::new(usize::MAX, 1, 8),
        JitterConfigError::TooLarge,
    );
}

#[test]
fn random_traffic_keeps_the_accounting_identities() {
    let mut rng = StdRng::seed_from_u64(0x717);
    for round in 0..50 {
        let max = rng.random_range(1..=32);
        let target = rng.random_range(1..=max);
        let mut jb = buffer(target, max);
        let (mut pushes, mut pops) = (0u64, 0u64);
        let mut seq: u32 = rng.random();
        for _ in 0..2000 {
            if rng.random_bool(0.55) {
                // Mostly forward, sometimes repeated or reordered, rarely a big jump.
                let id = match rng.random_range(0..20) {
                    0 => seq.wrapping_sub(rng.random_range(0..40)),
                    1 => seq.wrapping_add(rng.random_range(0..3000)),
                    2 => rng.random(),
                    _ => {
                        seq = seq.wrapping_add(rng.random_range(0..3));
                        seq
                    }
                };
                jb.push(id as u16, &frame(id % 1000)).unwrap();
                pushes += 1;
            } else {
                let mut out = [0.0f32; FRAME];
                jb.pop(&mut out).unwrap();
                pops += 1;
            }
            assert!(
                jb.buffered_len() <= max && jb.span() <= max,
                "round {round}"
            );
            check_accounting(&jb, pushes, pops);
        }
    }
}

#[test]
fn producer_thread_to_consumer_thread_loses_and_duplicates_nothing() {
    // 100 000 frames cross the u16 wrap once. The producer shuffles each block of 4 frames and
    // sends every 10th frame twice; the consumer pops only once the buffered span proves the next
    // frame has been sent (more than a block ahead), so nothing may be concealed or lost.
    const FRAMES: u32 = 100_000;
    const BLOCK: u32 = 4;
    let (sender, receiver) = mpsc::sync_channel::<(u16, [f32; FRAME])>(64);

    let producer = thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(0xfeed);
        let mut duplicates = 0u64;
        let first = 60_000u32; // Start near the wrap.
        for block_start in (0..FRAMES).step_by(BLOCK as usize) {
            let mut ids: Vec<u32> = (block_start..(block_start + BLOCK).min(FRAMES)).collect();
            ids.shuffle(&mut rng);
            for id in ids {
                let seq = (first + id) as u16;
                sender.send((seq, frame(id))).unwrap();
                if id % 10 == 0 {
                    sender.send((seq, frame(id))).unwrap();
                    duplicates += 1;
                }
            }
        }
        duplicates
    });

    let consumer = thread::spawn(move || {
        let mut jb = JitterBuffer::new(JitterConfig::new(FRAME, 2, 64)).unwrap();
        let mut played = Vec::with_capacity(FRAMES as usize);
        let mut out = [0.0f32; FRAME];
        let mut record =
            |jb: &mut JitterBuffer, played: &mut Vec<u32>| match jb.pop(&mut out).unwrap() {
                PopKind::Frame => played.push(out[0] as u32 - 1),
                other => assert_eq!(
                    other,
                    PopKind::Silence,
                    "concealment after {} frames",
                    played.len()
                ),
            };
        for (seq, samples) in receiver {
            jb.push(seq, &samples).unwrap();
            while jb.span() > BLOCK as usize {
                record(&mut jb, &mut played);
            }
        }
        while jb.buffered_len() > 0 {
            record(&mut jb, &mut played);
        }
        (played, jb.stats())
    });

    let sent_duplicates = producer.join().unwrap();
    let (played, stats) = consumer.join().unwrap();
    assert_eq!(played.len(), FRAMES as usize);
    assert!(
        played.iter().zip(0..).all(|(&got, want)| got == want),
        "order broken"
    );
    assert_eq!(
        (stats.lost, stats.concealed, stats.overruns, stats.underruns),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.duplicates + stats.late, sent_duplicates);
    assert_eq!(stats.received, u64::from(FRAMES));
}
