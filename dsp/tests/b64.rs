//! Base64: round trips at audio frame sizes, known vectors, capacity reuse and strict rejection.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxgate_dsp::b64::{self, B64Error};

#[test]
fn rfc4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(b64::encode(plain.as_bytes()), encoded);
        assert_eq!(b64::decode(encoded).unwrap(), plain.as_bytes());
        assert_eq!(b64::encoded_len(plain.len()), encoded.len());
    }
    // The standard alphabet, not the URL-safe one.
    assert_eq!(b64::encode(&[0xFB, 0xFF]), "+/8=");
}

#[test]
fn random_payloads_round_trip_at_every_small_length_and_frame_sizes() {
    let mut rng = StdRng::seed_from_u64(0xb64);
    // 0..=300 covers every tail shape of the SIMD loops; 960 and 3840 bytes are 20 ms and 80 ms of
    // PCM16 at 24 kHz; 1 MiB is a long upload.
    let lengths = (0..=300).chain([960, 3840, 1 << 20]);
    let mut text = String::new();
    let mut bytes = Vec::new();
    for len in lengths {
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        let encoded = b64::encode(&data);
        assert_eq!(encoded.len(), b64::encoded_len(len));
        assert_eq!(b64::decode(&encoded).unwrap(), data, "length {len}");

        b64::encode_into(&data, &mut text);
        assert_eq!(text, encoded);
        b64::decode_into(&text, &mut bytes).unwrap();
        assert_eq!(bytes, data);

        let mut slice = vec![0u8; len + 3];
        assert_eq!(b64::decode_to_slice(&encoded, &mut slice), Ok(len));
        assert_eq!(&slice[..len], &data[..]);
    }
}

#[test]
fn into_forms_reuse_capacity() {
    let data = vec![0x55u8; 3000];
    let mut text = String::with_capacity(8192);
    let mut bytes = Vec::with_capacity(8192);
    let (text_ptr, bytes_ptr) = (text.as_ptr(), bytes.as_ptr());
    for _ in 0..10 {
        b64::encode_into(&data, &mut text);
        b64::decode_into(&text, &mut bytes).unwrap();
    }
    assert_eq!(bytes, data);
    assert_eq!(
        (text.as_ptr(), bytes.as_ptr()),
        (text_ptr, bytes_ptr),
        "buffers were reallocated"
    );
}

#[test]
fn invalid_text_is_an_error() {
    let invalid = [
        "Zg",        // Missing padding.
        "Zg=",       // Short padding.
        "Z===",      // Too much padding.
        "Zm9v YmFy", // Whitespace.
        "Zm9v\n",    // Newline.
        "-_8=",      // URL-safe alphabet.
        "Zm9v!mFy",  // Not base64 at all.
        "Zm=v",      // Padding in the middle.
        "é",         // Non-ASCII.
    ];
    for text in invalid {
        assert_eq!(b64::decode(text), Err(B64Error::Invalid), "{text:?}");
        let mut out = vec![1, 2, 3];
        assert_eq!(
            b64::decode_into(text, &mut out),
            Err(B64Error::Invalid),
            "{text:?}"
        );
        assert!(out.is_empty(), "{text:?} left {out:?}");
        assert_eq!(
            b64::decode_to_slice(text, &mut [0; 16]),
            Err(B64Error::Invalid),
            "{text:?}"
        );
    }
}

#[test]
fn decode_to_slice_refuses_a_short_output() {
    let mut out = [9u8; 5];
    assert_eq!(
        b64::decode_to_slice("Zm9vYmFy", &mut out),
        Err(B64Error::OutputTooShort {
            needed: 6,
            available: 5
        })
    );
    assert_eq!(out, [9; 5]);
}
