//! Arbitrary bytes through the PCM16 decoder: every kernel agrees bit for bit with the scalar one,
//! lengths are exact, odd input is an error, and PCM16 -> f32 -> PCM16 is the identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_dsp::pcm::{
    Kernel, PcmError, decode_pcm16le, encode_pcm16le, f32_to_pcm16le_with, pcm16le_to_f32_with,
};

fuzz_target!(|data: &[u8]| {
    if data.len() % 2 != 0 {
        assert_eq!(
            decode_pcm16le(data),
            Err(PcmError::OddByteCount { len: data.len() })
        );
        return;
    }
    let decoded = decode_pcm16le(data).expect("even-length input decodes");
    assert_eq!(decoded.len(), data.len() / 2);

    let mut reference = vec![0.0f32; decoded.len()];
    pcm16le_to_f32_with(Kernel::Scalar, data, &mut reference).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&decoded),
        bits(&reference),
        "dispatched kernel differs from scalar"
    );

    let mut bytes = vec![0u8; data.len()];
    for kernel in Kernel::available() {
        let mut out = vec![f32::NAN; decoded.len()];
        assert_eq!(pcm16le_to_f32_with(kernel, data, &mut out), Ok(out.len()));
        assert_eq!(
            bits(&out),
            bits(&reference),
            "{kernel} decode differs from scalar"
        );
        assert_eq!(
            f32_to_pcm16le_with(kernel, &out, &mut bytes),
            Ok(data.len())
        );
        assert_eq!(bytes, data, "{kernel} encode is not the inverse of decode");
    }
    assert!(decoded.iter().all(|x| (-1.0..1.0).contains(x)));
    assert_eq!(encode_pcm16le(&decoded), data);
});
