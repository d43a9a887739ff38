//! Arbitrary sequences of pushes (any sequence number, duplicates, gaps, wrong lengths), pops and
//! resets against one jitter buffer: no panic, fixed-size output, bounded depth, no frame played
//! twice, and the accounting identities hold after every step.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxgate_dsp::jitter::{JitterBuffer, JitterConfig, JitterError, PopKind};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Push under `seq`, or under the previous sequence number plus `seq % 4` when `near`, so that
    /// runs of nearly consecutive frames (the interesting case) are common.
    Push {
        seq: u16,
        near: bool,
    },
    /// A push whose frame has the wrong length: must be refused without effect.
    PushWrongLength {
        seq: u16,
    },
    Pop,
    Reset,
}

#[derive(Arbitrary, Debug)]
struct Input {
    frame_len: u8,
    target_depth: u8,
    max_depth: u8,
    resync_after: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let frame_len = usize::from(input.frame_len % 16) + 1;
    let max_depth = usize::from(input.max_depth % 64) + 1;
    let target_depth = usize::from(input.target_depth) % max_depth + 1;
    let config = JitterConfig {
        frame_len,
        target_depth,
        max_depth,
        resync_after: usize::from(input.resync_after % 16) + 1,
    };
    let mut jb = JitterBuffer::new(config).expect("valid config");

    let (mut pushes, mut pops) = (0u64, 0u64);
    let mut last_seq = 0u16;
    // Each stored frame carries its push index in every sample, so a played frame names itself.
    let mut played = HashSet::new();
    let mut frame = vec![0.0f32; frame_len];
    let mut out = vec![0.0f32; frame_len];
    for op in input.ops {
        match op {
            Op::Push { seq, near } => {
                let seq = if near {
                    last_seq.wrapping_add(seq % 4)
                } else {
                    seq
                };
                last_seq = seq;
                frame.fill(pushes as f32 + 1.0);
                jb.push(seq, &frame).unwrap();
                pushes += 1;
            }
            Op::PushWrongLength { seq } => {
                let before = jb.stats();
                let wrong = vec![0.0f32; frame_len + 1];
                assert_eq!(
                    jb.push(seq, &wrong),
                    Err(JitterError::FrameLength {
                        expected: frame_len,
                        actual: frame_len + 1
                    })
                );
                assert_eq!(jb.stats(), before);
            }
            Op::Pop => {
                out.fill(f32::NAN);
                match jb.pop(&mut out).unwrap() {
                    PopKind::Frame => {
                        let id = out[0];
                        assert!(out.iter().all(|&x| x == id), "frame mixed from two pushes");
                        assert!(
                            id >= 1.0 && id <= pushes as f32,
                            "frame {id} was never pushed"
                        );
                        assert!(played.insert(id.to_bits()), "frame {id} played twice");
                    }
                    PopKind::Silence => assert!(out.iter().all(|&x| x == 0.0)),
                    PopKind::Concealed => assert!(out.iter().all(|x| x.is_finite())),
                }
                pops += 1;
            }
            Op::Reset => jb.reset(),
        }
        let s = jb.stats();
        assert!(
            jb.buffered_len() <= max_depth && jb.span() <= max_depth,
            "{s:?}"
        );
        assert_eq!(s.received + s.duplicates + s.late, pushes, "{s:?}");
        assert_eq!(
            s.received,
            s.played + s.overruns + s.flushed + jb.buffered_len() as u64,
            "{s:?}"
        );
        assert_eq!(s.played + s.concealed + s.silence, pops, "{s:?}");
        assert_eq!(s.played, played.len() as u64);
    }
});
