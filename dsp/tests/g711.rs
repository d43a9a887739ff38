//! G.711: the decoders against the ITU-T G.711 / Sun reference expansion tables, round trips of
//! every code, and quantisation behaviour over every i16.

use voxgate_dsp::codec::g711::{
    G711Error, alaw_to_f32_into, decode_alaw, decode_alaw_into, decode_ulaw, decode_ulaw_into,
    encode_alaw, encode_alaw_into, encode_ulaw, encode_ulaw_into, f32_to_alaw_into,
    f32_to_ulaw_into, ulaw_to_f32_into,
};

/// Linear value of each mu-law code, as tabulated by the reference implementation (Sun `u2l`).
/// Written out here rather than computed, so that the decoder is checked against the standard and
/// not against itself.
#[rustfmt::skip]
const ULAW_REFERENCE: [i16; 256] = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
    -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
    -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412,
    -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316,
    -7932, -7676, -7420, -7164, -6908, -6652, -6396, -6140,
    -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092,
    -3900, -3772, -3644, -3516, -3388, -3260, -3132, -3004,
    -2876, -2748, -2620, -2492, -2364, -2236, -2108, -1980,
    -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436,
    -1372, -1308, -1244, -1180, -1116, -1052, -988, -924,
    -876, -844, -812, -780, -748, -716, -684, -652,
    -620, -588, -556, -524, -492, -460, -428, -396,
    -372, -356, -340, -324, -308, -292, -276, -260,
    -244, -228, -212, -196, -180, -164, -148, -132,
    -120, -112, -104, -96, -88, -80, -72, -64,
    -56, -48, -40, -32, -24, -16, -8, 0,
    32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956,
    23932, 22908, 21884, 20860, 19836, 18812, 17788, 16764,
    15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412,
    11900, 11388, 10876, 10364, 9852, 9340, 8828, 8316,
    7932, 7676, 7420, 7164, 6908, 6652, 6396, 6140,
    5884, 5628, 5372, 5116, 4860, 4604, 4348, 4092,
    3900, 3772, 3644, 3516, 3388, 3260, 3132, 3004,
    2876, 2748, 2620, 2492, 2364, 2236, 2108, 1980,
    1884, 1820, 1756, 1692, 1628, 1564, 1500, 1436,
    1372, 1308, 1244, 1180, 1116, 1052, 988, 924,
    876, 844, 812, 780, 748, 716, 684, 652,
    620, 588, 556, 524, 492, 460, 428, 396,
    372, 356, 340, 324, 308, 292, 276, 260,
    244, 228, 212, 196, 180, 164, 148, 132,
    120, 112, 104, 96, 88, 80, 72, 64,
    56, 48, 40, 32, 24, 16, 8, 0,
];

/// Linear value of each A-law code, as tabulated by the reference implementation (Sun `a2l`).
#[rustfmt::skip]
const ALAW_REFERENCE: [i16; 256] = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736,
    -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784,
    -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368,
    -3776, -3648, -4032, -3904, -3264, -3136, -3520, -3392,
    -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944,
    -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136,
    -11008, -10496, -12032, -11520, -8960, -8448, -9984, -9472,
    -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568,
    -344, -328, -376, -360, -280, -264, -312, -296,
    -472, -456, -504, -488, -408, -392, -440, -424,
    -88, -72, -120, -104, -24, -8, -56, -40,
    -216, -200, -248, -232, -152, -136, -184, -168,
    -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184,
    -1888, -1824, -2016, -1952, -1632, -1568, -1760, -1696,
    -688, -656, -752, -720, -560, -528, -624, -592,
    -944, -912, -1008, -976, -816, -784, -880, -848,
    5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736,
    7552, 7296, 8064, 7808, 6528, 6272, 7040, 6784,
    2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368,
    3776, 3648, 4032, 3904, 3264, 3136, 3520, 3392,
    22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944,
    30208, 29184, 32256, 31232, 26112, 25088, 28160, 27136,
    11008, 10496, 12032, 11520, 8960, 8448, 9984, 9472,
    15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568,
    344, 328, 376, 360, 280, 264, 312, 296,
    472, 456, 504, 488, 408, 392, 440, 424,
    88, 72, 120, 104, 24, 8, 56, 40,
    216, 200, 248, 232, 152, 136, 184, 168,
    1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184,
    1888, 1824, 2016, 1952, 1632, 1568, 1760, 1696,
    688, 656, 752, 720, 560, 528, 624, 592,
    944, 912, 1008, 976, 816, 784, 880, 848,
];

#[test]
fn every_code_decodes_to_the_reference_table() {
    for code in 0..=255u8 {
        assert_eq!(
            decode_ulaw(code),
            ULAW_REFERENCE[usize::from(code)],
            "mu-law {code:#04x}"
        );
        assert_eq!(
            decode_alaw(code),
            ALAW_REFERENCE[usize::from(code)],
            "A-law {code:#04x}"
        );
    }
}

#[test]
fn landmark_codes() {
    for (code, linear) in [
        (0x00, -32124),
        (0x80, 32124),
        (0xFF, 0),
        (0x7F, 0),
        (0x7E, -8),
        (0xFE, 8),
    ] {
        assert_eq!(decode_ulaw(code), linear, "mu-law {code:#04x}");
    }
    for (code, linear) in [(0xD5, 8), (0x55, -8), (0x2A, -32256), (0xAA, 32256)] {
        assert_eq!(decode_alaw(code), linear, "A-law {code:#04x}");
    }
    assert_eq!(encode_ulaw(0), 0xFF);
    assert_eq!(encode_ulaw(i16::MAX), 0x80);
    assert_eq!(encode_ulaw(i16::MIN), 0x00);
    assert_eq!(encode_alaw(0), 0xD5);
    assert_eq!(encode_alaw(-1), 0x55);
    assert_eq!(encode_alaw(i16::MAX), 0xAA);
    assert_eq!(encode_alaw(i16::MIN), 0x2A);
}

#[test]
fn every_code_survives_decode_then_encode() {
    for code in 0..=255u8 {
        // Mu-law's "negative zero" 0x7F decodes to 0, which encodes as the positive zero 0xFF.
        let expected = if code == 0x7F { 0xFF } else { code };
        assert_eq!(
            encode_ulaw(decode_ulaw(code)),
            expected,
            "mu-law {code:#04x}"
        );
        assert_eq!(encode_alaw(decode_alaw(code)), code, "A-law {code:#04x}");
    }
}

/// Width of the quantisation interval a code stands for: 2^(segment + 3) linear steps, except that
/// A-law's first two segments share the width 16.
fn interval(code: u8, alaw: bool) -> i32 {
    let segment = if alaw {
        (code ^ 0x55) & 0x70
    } else {
        !code & 0x70
    } >> 4;
    if alaw && segment == 0 {
        16
    } else {
        1 << (segment + 3)
    }
}

/// Checks that companding every i16 is monotonic and off by at most half an interval, except for
/// clipping beyond the largest level.
fn check_quantisation(encode: fn(i16) -> u8, decode: fn(u8) -> i16, alaw: bool) {
    let max_level = (0..=255u8)
        .map(|code| i32::from(decode(code)))
        .max()
        .unwrap();
    let mut previous = i32::MIN;
    for x in i16::MIN..=i16::MAX {
        let code = encode(x);
        let y = i32::from(decode(code));
        let x = i32::from(x);
        assert!(y >= previous, "not monotonic at {x}: {y} after {previous}");
        previous = y;
        let clipped = y.abs() == max_level && x.abs() >= max_level;
        assert!(
            clipped || (x - y).abs() <= interval(code, alaw) / 2,
            "{x} -> {code:#04x} -> {y}: error beyond half an interval"
        );
    }
}

#[test]
fn ulaw_quantisation_is_monotonic_and_bounded() {
    check_quantisation(encode_ulaw, decode_ulaw, false);
}

#[test]
fn alaw_quantisation_is_monotonic_and_bounded() {
    check_quantisation(encode_alaw, decode_alaw, true);
}

#[test]
fn slice_forms_match_the_sample_forms() {
    let linear: Vec<i16> = (i16::MIN..=i16::MAX).step_by(97).collect();
    let mut codes = vec![0u8; linear.len()];
    let mut back = vec![0i16; linear.len()];

    assert_eq!(encode_ulaw_into(&linear, &mut codes), Ok(linear.len()));
    assert!(
        linear
            .iter()
            .zip(&codes)
            .all(|(&x, &c)| encode_ulaw(x) == c)
    );
    assert_eq!(decode_ulaw_into(&codes, &mut back), Ok(codes.len()));
    assert!(codes.iter().zip(&back).all(|(&c, &y)| decode_ulaw(c) == y));

    assert_eq!(encode_alaw_into(&linear, &mut codes), Ok(linear.len()));
    assert!(
        linear
            .iter()
            .zip(&codes)
            .all(|(&x, &c)| encode_alaw(x) == c)
    );
    assert_eq!(decode_alaw_into(&codes, &mut back), Ok(codes.len()));
    assert!(codes.iter().zip(&back).all(|(&c, &y)| decode_alaw(c) == y));
}

#[test]
fn f32_helpers_scale_like_pcm16() {
    let all_codes: Vec<u8> = (0..=255).collect();
    let mut floats = vec![0.0f32; 256];
    let mut codes = vec![0u8; 256];

    assert_eq!(ulaw_to_f32_into(&all_codes, &mut floats), Ok(256));
    for (&code, &f) in all_codes.iter().zip(&floats) {
        assert_eq!(f, f32::from(ULAW_REFERENCE[usize::from(code)]) / 32768.0);
    }
    assert_eq!(f32_to_ulaw_into(&floats, &mut codes), Ok(256));
    let expected: Vec<u8> = all_codes
        .iter()
        .map(|&c| if c == 0x7F { 0xFF } else { c })
        .collect();
    assert_eq!(codes, expected);

    assert_eq!(alaw_to_f32_into(&all_codes, &mut floats), Ok(256));
    for (&code, &f) in all_codes.iter().zip(&floats) {
        assert_eq!(f, f32::from(ALAW_REFERENCE[usize::from(code)]) / 32768.0);
    }
    assert_eq!(f32_to_alaw_into(&floats, &mut codes), Ok(256));
    assert_eq!(codes, all_codes);

    // Out-of-range and NaN input is clipped / zeroed before companding, never a panic.
    let mut three = [0u8; 3];
    f32_to_ulaw_into(&[4.0, -4.0, f32::NAN], &mut three).unwrap();
    assert_eq!(three, [0x80, 0x00, 0xFF]);
    f32_to_alaw_into(&[4.0, -4.0, f32::NAN], &mut three).unwrap();
    assert_eq!(three, [0xAA, 0x2A, 0xD5]);
}

#[test]
fn short_outputs_are_refused_untouched() {
    let mut out = [7u8; 2];
    assert_eq!(
        f32_to_ulaw_into(&[0.0; 3], &mut out),
        Err(G711Error::OutputTooShort {
            needed: 3,
            available: 2
        })
    );
    assert_eq!(
        encode_alaw_into(&[0; 3], &mut out),
        Err(G711Error::OutputTooShort {
            needed: 3,
            available: 2
        })
    );
    assert_eq!(out, [7, 7]);
    let mut floats = [1.0f32; 1];
    assert_eq!(
        alaw_to_f32_into(&[0xD5, 0xD5], &mut floats),
        Err(G711Error::OutputTooShort {
            needed: 2,
            available: 1
        })
    );
    let mut linear = [1i16; 1];
    assert_eq!(
        decode_ulaw_into(&[0xFF, 0xFF], &mut linear),
        Err(G711Error::OutputTooShort {
            needed: 2,
            available: 1
        })
    );
    assert_eq!((floats, linear), ([1.0], [1]));
}
