//! PCM conversion: every SIMD kernel against the scalar one, the conversion rules, and errors.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_dsp::pcm::{
    self, Kernel, PcmError, decode_pcm16le, encode_pcm16le, f32_to_i16, f32_to_pcm16le,
    f32_to_pcm16le_with, i16_to_f32, interleaved_to_mono, pcm16le_to_f32, pcm16le_to_f32_with,
    sample_f32_to_i16, stereo_to_mono,
};

/// The SIMD kernels this machine can run (the scalar one is the reference).
fn simd_kernels() -> Vec<Kernel> {
    let kernels: Vec<Kernel> = Kernel::available()
        .filter(|&k| k != Kernel::Scalar)
        .collect();
    // On x86_64 SSE2 is architectural, so the comparison tests can never silently test nothing.
    if cfg!(target_arch = "x86_64") {
        assert!(
            kernels.contains(&Kernel::Sse2),
            "SSE2 must be available on x86_64"
        );
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(kernels.contains(&Kernel::Avx2));
        }
    }
    kernels
}

/// f32 test values: uniform audio, out-of-range values, exact rounding ties and raw bit patterns
/// (which include NaNs, infinities and subnormals).
fn random_floats(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => rng.random_range(-1.0f32..1.0),
            1 => rng.random_range(-3.0f32..3.0),
            2 => (rng.random_range(-40_000i32..40_000) as f32 + 0.5) / 32768.0,
            _ => f32::from_bits(rng.random()),
        })
        .collect()
}

fn decode_with(kernel: Kernel, bytes: &[u8]) -> Vec<u32> {
    let mut out = vec![f32::NAN; bytes.len() / 2];
    assert_eq!(
        pcm16le_to_f32_with(kernel, bytes, &mut out),
        Ok(bytes.len() / 2)
    );
    out.into_iter().map(f32::to_bits).collect()
}

fn encode_with(kernel: Kernel, samples: &[f32]) -> Vec<u8> {
    let mut out = vec![0xA5; samples.len() * 2];
    assert_eq!(
        f32_to_pcm16le_with(kernel, samples, &mut out),
        Ok(samples.len() * 2)
    );
    out
}

#[test]
fn decode_kernels_match_scalar_for_all_lengths_and_offsets() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut buffer = vec![0u8; 2 * 257 + 8];
    for kernel in simd_kernels() {
        for samples in 0..=257usize {
            for offset in 0..8 {
                rng.fill(&mut buffer[..]);
                let bytes = &buffer[offset..offset + 2 * samples];
                assert_eq!(
                    decode_with(kernel, bytes),
                    decode_with(Kernel::Scalar, bytes),
                    "{kernel}, {samples} samples at byte offset {offset}"
                );
            }
        }
    }
}

#[test]
fn encode_kernels_match_scalar_for_all_lengths_and_offsets() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    for kernel in simd_kernels() {
        for samples in 0..=257usize {
            for offset in 0..8 {
                let floats = random_floats(&mut rng, samples + offset);
                let input = &floats[offset..];
                assert_eq!(
                    encode_with(kernel, input),
                    encode_with(Kernel::Scalar, input),
                    "{kernel}, {samples} samples at element offset {offset}"
                );
            }
        }
    }
}

#[test]
fn encode_kernels_write_unaligned_output() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let input = random_floats(&mut rng, 203);
    let expected = encode_with(Kernel::Scalar, &input);
    for kernel in simd_kernels() {
        // Byte offsets 0..32 cover odd addresses and every even phase of a 32-byte boundary.
        for offset in 0..32 {
            let mut buffer = vec![0u8; 2 * input.len() + 64];
            let written = f32_to_pcm16le_with(kernel, &input, &mut buffer[offset..]).unwrap();
            assert_eq!(
                &buffer[offset..offset + written],
                &expected[..],
                "{kernel} @ {offset}"
            );
            // Nothing beyond the converted bytes is touched.
            assert!(
                buffer[offset + written..].iter().all(|&b| b == 0),
                "{kernel} @ {offset}"
            );
            assert!(
                buffer[..offset].iter().all(|&b| b == 0),
                "{kernel} @ {offset}"
            );
        }
    }
}

#[test]
fn decode_kernels_write_unaligned_output() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let mut bytes = vec![0u8; 2 * 203];
    rng.fill(&mut bytes[..]);
    let expected = decode_with(Kernel::Scalar, &bytes);
    for kernel in simd_kernels() {
        // Element offsets 0..8 put the output at every 4-byte phase of a 32-byte boundary.
        for offset in 0..8 {
            let mut buffer = vec![0.0f32; 203 + 16];
            let written = pcm16le_to_f32_with(kernel, &bytes, &mut buffer[offset..]).unwrap();
            let got: Vec<u32> = buffer[offset..offset + written]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(got, expected, "{kernel} @ {offset}");
            assert!(
                buffer[offset + written..].iter().all(|&x| x == 0.0),
                "{kernel} @ {offset}"
            );
            assert!(
                buffer[..offset].iter().all(|&x| x == 0.0),
                "{kernel} @ {offset}"
            );
        }
    }
}

#[test]
fn decode_kernels_leave_the_rest_of_the_output_alone() {
    let bytes: Vec<u8> = (0..=255u8).collect();
    for kernel in Kernel::available() {
        let mut out = vec![7.0f32; 200];
        pcm16le_to_f32_with(kernel, &bytes, &mut out).unwrap();
        assert!(out[128..].iter().all(|&x| x == 7.0), "{kernel}");
    }
}

/// One row of the conversion rule: input, expected i16.
fn check_encode(input: f32, expected: i16) {
    assert_eq!(
        sample_f32_to_i16(input),
        expected,
        "scalar rule for {input:e}"
    );
    let samples = vec![input; 67]; // Long enough to go through every kernel's vector loop.
    for kernel in Kernel::available() {
        let bytes = encode_with(kernel, &samples);
        for pair in bytes.chunks_exact(2) {
            assert_eq!(
                i16::from_le_bytes([pair[0], pair[1]]),
                expected,
                "{kernel}, {input:e}"
            );
        }
    }
}

#[test]
fn encode_rounds_half_to_even_clips_and_zeroes_nan() {
    let step = 1.0 / 32768.0;
    check_encode(0.0, 0);
    check_encode(-0.0, 0);
    check_encode(1.0, i16::MAX);
    check_encode(-1.0, i16::MIN);
    check_encode(1.5, i16::MAX);
    check_encode(-1.5, i16::MIN);
    check_encode(f32::MAX, i16::MAX);
    check_encode(f32::MIN, i16::MIN);
    check_encode(f32::INFINITY, i16::MAX);
    check_encode(f32::NEG_INFINITY, i16::MIN);
    check_encode(f32::NAN, 0);
    check_encode(-f32::NAN, 0);
    check_encode(f32::from_bits(0x7FA0_0001), 0); // A signalling NaN.
    check_encode(f32::MIN_POSITIVE / 4.0, 0); // Subnormal.
    check_encode(32767.0 * step, 32767);
    check_encode(32767.4 * step, 32767);
    check_encode(32767.5 * step, 32767); // Rounds to 32768, clipped.
    check_encode(-32768.0 * step, -32768);
    check_encode(-32768.5 * step, -32768);
    check_encode(0.5 * step, 0); // Ties go to even.
    check_encode(1.5 * step, 2);
    check_encode(2.5 * step, 2);
    check_encode(-0.5 * step, 0);
    check_encode(-1.5 * step, -2);
    check_encode(-2.5 * step, -2);
    check_encode(0.49 * step, 0);
    check_encode(0.51 * step, 1);
    check_encode(1000.25 * step, 1000);
    check_encode(-1000.75 * step, -1001);
}

#[test]
fn decode_edge_values() {
    let bytes: Vec<u8> = [i16::MIN, -1, 0, 1, i16::MAX]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let expected = [-1.0, -1.0 / 32768.0, 0.0, 1.0 / 32768.0, 32767.0 / 32768.0];
    for kernel in Kernel::available() {
        let mut out = [0.0f32; 5];
        pcm16le_to_f32_with(kernel, &bytes, &mut out).unwrap();
        assert_eq!(out, expected, "{kernel}");
    }
}

#[test]
fn every_i16_round_trips_exactly_on_every_kernel() {
    let bytes: Vec<u8> = (i16::MIN..=i16::MAX).flat_map(i16::to_le_bytes).collect();
    for kernel in Kernel::available() {
        let mut floats = vec![0.0f32; 65536];
        pcm16le_to_f32_with(kernel, &bytes, &mut floats).unwrap();
        for (value, &float) in (i16::MIN..=i16::MAX).zip(&floats) {
            assert_eq!(float, f32::from(value) / 32768.0, "{kernel}, {value}");
        }
        assert_eq!(encode_with(kernel, &floats), bytes, "{kernel}");
    }
}

#[test]
fn dispatched_functions_use_an_available_kernel_and_agree_with_scalar() {
    assert!(Kernel::detected().is_available());
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let mut bytes = vec![0u8; 4002];
    rng.fill(&mut bytes[..]);
    let decoded = decode_pcm16le(&bytes).unwrap();
    assert_eq!(
        decoded.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        decode_with(Kernel::Scalar, &bytes)
    );
    assert_eq!(encode_pcm16le(&decoded), bytes);

    let floats = random_floats(&mut rng, 1001);
    let mut out = vec![0u8; 2002];
    assert_eq!(f32_to_pcm16le(&floats, &mut out), Ok(2002));
    assert_eq!(out, encode_with(Kernel::Scalar, &floats));
    assert_eq!(encode_pcm16le(&floats), out);
}

#[test]
fn errors_are_reported_and_nothing_is_written() {
    let mut out = [9.0f32; 4];
    assert_eq!(
        pcm16le_to_f32(&[1, 2, 3], &mut out),
        Err(PcmError::OddByteCount { len: 3 })
    );
    assert_eq!(
        pcm16le_to_f32(&[0; 10], &mut out),
        Err(PcmError::OutputTooShort {
            needed: 5,
            available: 4
        })
    );
    assert_eq!(out, [9.0; 4]);
    assert_eq!(
        decode_pcm16le(&[0; 7]),
        Err(PcmError::OddByteCount { len: 7 })
    );

    let mut bytes = [9u8; 5];
    assert_eq!(
        f32_to_pcm16le(&[0.0; 3], &mut bytes),
        Err(PcmError::OutputTooShort {
            needed: 6,
            available: 5
        })
    );
    assert_eq!(bytes, [9; 5]);
    // A longer output is fine: only the prefix is written.
    assert_eq!(f32_to_pcm16le(&[1.0, -1.0], &mut bytes), Ok(4));
    assert_eq!(bytes, [0xFF, 0x7F, 0x00, 0x80, 9]);

    for kernel in Kernel::ALL.into_iter().filter(|k| !k.is_available()) {
        assert_eq!(
            pcm16le_to_f32_with(kernel, &[0, 0], &mut out),
            Err(PcmError::KernelUnavailable { kernel })
        );
        assert_eq!(
            f32_to_pcm16le_with(kernel, &[0.0], &mut bytes),
            Err(PcmError::KernelUnavailable { kernel })
        );
    }
    assert!(
        PcmError::OddByteCount { len: 3 }
            .to_string()
            .contains("odd byte count (3)")
    );
}

#[test]
fn i16_slices_convert_like_the_byte_forms() {
    let samples: Vec<i16> = vec![i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX];
    let mut floats = vec![0.0f32; samples.len()];
    assert_eq!(i16_to_f32(&samples, &mut floats), Ok(samples.len()));
    for (&s, &f) in samples.iter().zip(&floats) {
        assert_eq!(f, pcm::sample_i16_to_f32(s));
    }
    let mut back = vec![0i16; samples.len()];
    assert_eq!(f32_to_i16(&floats, &mut back), Ok(samples.len()));
    assert_eq!(back, samples);
    assert_eq!(
        f32_to_i16(&floats, &mut back[..3]),
        Err(PcmError::OutputTooShort {
            needed: 7,
            available: 3
        })
    );
    assert_eq!(
        i16_to_f32(&samples, &mut floats[..2]),
        Err(PcmError::OutputTooShort {
            needed: 7,
            available: 2
        })
    );
    let mut clipped = [0i16; 3];
    f32_to_i16(&[2.0, -2.0, f32::NAN], &mut clipped).unwrap();
    assert_eq!(clipped, [i16::MAX, i16::MIN, 0]);
}

#[test]
fn stereo_and_multichannel_downmix_average() {
    let stereo = [1.0, 0.0, 0.5, -0.5, -1.0, -1.0];
    let mut mono = [9.0f32; 4];
    assert_eq!(stereo_to_mono(&stereo, &mut mono), Ok(3));
    assert_eq!(mono, [0.5, 0.0, -1.0, 9.0]);
    assert_eq!(
        stereo_to_mono(&stereo[..5], &mut mono),
        Err(PcmError::PartialFrame {
            len: 5,
            channels: 2
        })
    );
    assert_eq!(
        stereo_to_mono(&stereo, &mut mono[..2]),
        Err(PcmError::OutputTooShort {
            needed: 3,
            available: 2
        })
    );

    let three = [0.3, 0.3, 0.3, 1.0, -1.0, 0.0];
    let mut out = [0.0f32; 2];
    assert_eq!(interleaved_to_mono(&three, 3, &mut out), Ok(2));
    assert!((out[0] - 0.3).abs() < 1e-6 && out[1] == 0.0, "{out:?}");
    assert_eq!(
        interleaved_to_mono(&three, 0, &mut out),
        Err(PcmError::ZeroChannels)
    );
    assert_eq!(
        interleaved_to_mono(&three, 4, &mut out),
        Err(PcmError::PartialFrame {
            len: 6,
            channels: 4
        })
    );
    let mut copy = [0.0f32; 6];
    assert_eq!(interleaved_to_mono(&three, 1, &mut copy), Ok(6));
    assert_eq!(copy, three);
    let mut via_generic = [0.0f32; 3];
    interleaved_to_mono(&stereo, 2, &mut via_generic).unwrap();
    assert_eq!(via_generic, [0.5, 0.0, -1.0]);
}
