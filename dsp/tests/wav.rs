//! WAV: every supported encoding read back as mono, streaming in chunks, writing, in-memory forms
//! and errors for bad files. Files are real files in a temporary directory.

use std::path::Path;

use voxgate_dsp::pcm::sample_f32_to_i16;
use voxgate_dsp::wav::{
    SampleEncoding, WavError, WavReader, WavWriter, from_wav_bytes, read_wav_mono, to_wav_bytes,
    write_wav_pcm16,
};

/// A short test signal: a 440 Hz sine at 0.8 full scale plus a clipped and a NaN sample.
fn signal(len: usize, rate: u32) -> Vec<f32> {
    let mut samples: Vec<f32> = (0..len)
        .map(|i| 0.8 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
        .collect();
    if len > 2 {
        samples[1] = 1.7;
        samples[2] = f32::NAN;
    }
    samples
}

/// What a sample becomes after a trip through PCM16.
fn quantised(x: f32) -> f32 {
    f32::from(sample_f32_to_i16(x)) / 32768.0
}

/// Writes interleaved integer samples with hound in the given width.
fn write_int(path: &Path, channels: u16, bits: u16, rate: u32, interleaved: &[i32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in interleaved {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn pcm16_mono_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mono.wav");
    let samples = signal(4801, 24_000);
    write_wav_pcm16(&path, 24_000, &samples).unwrap();
    let (read, rate) = read_wav_mono(&path).unwrap();
    assert_eq!(rate, 24_000);
    assert_eq!(read.len(), samples.len());
    for (i, (&r, &s)) in read.iter().zip(&samples).enumerate() {
        assert_eq!(r, quantised(s), "sample {i}");
    }
    let info = WavReader::open(&path).unwrap().info();
    assert_eq!(
        (
            info.channels,
            info.bits_per_sample,
            info.encoding,
            info.frames
        ),
        (1, 16, SampleEncoding::Int, 4801)
    );
}

#[test]
fn integer_widths_and_channel_counts_average_into_mono() {
    let dir = tempfile::tempdir().unwrap();
    // Per width: (bits, full scale). Two frames per file, channel values chosen so the average
    // and the scaling are both exercised.
    for (bits, full) in [(8u16, 128i64), (16, 32768), (24, 1 << 23), (32, 1 << 31)] {
        for channels in [1u16, 2, 3, 6] {
            let path = dir.path().join(format!("int{bits}_{channels}.wav"));
            let half = full / 2;
            // The most negative value of each width is -full; +full itself is out of range.
            let frame_a: Vec<i32> = (0..channels)
                .map(|c| if c % 2 == 0 { half } else { -full } as i32)
                .collect();
            let frame_b: Vec<i32> = vec![-half as i32; usize::from(channels)];
            let interleaved: Vec<i32> = frame_a.iter().chain(&frame_b).copied().collect();
            write_int(&path, channels, bits, 16_000, &interleaved);

            let (mono, rate) = read_wav_mono(&path).unwrap();
            assert_eq!(rate, 16_000);
            let average = |frame: &[i32]| {
                frame.iter().map(|&s| s as f64 / full as f64).sum::<f64>() / frame.len() as f64
            };
            let expected = [average(&frame_a), average(&frame_b)];
            assert_eq!(mono.len(), 2, "{bits} bits, {channels} channels");
            for (got, want) in mono.iter().zip(expected) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-6,
                    "{bits} bits, {channels} ch: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn float_wav_reads_unscaled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for s in [0.5f32, 0.25, -1.0, 1.0, 0.125, 0.125] {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    let (mono, rate) = read_wav_mono(&path).unwrap();
    assert_eq!((mono, rate), (vec![0.375, 0.0, 0.125], 48_000));
    assert_eq!(
        WavReader::open(&path).unwrap().info().encoding,
        SampleEncoding::Float
    );
}

#[test]
fn streaming_reader_yields_requested_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.wav");
    // Stereo, so the reader has to downmix while streaming.
    let interleaved: Vec<i32> = (0..2 * 1000).map(|i| (i * 13 % 60_000) - 30_000).collect();
    write_int(&path, 2, 16, 8_000, &interleaved);
    let (whole, _) = read_wav_mono(&path).unwrap();
    assert_eq!(whole.len(), 1000);

    let chunks: Vec<Vec<f32>> = WavReader::open(&path)
        .unwrap()
        .chunks(160)
        .map(Result::unwrap)
        .collect();
    let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
    assert_eq!(sizes, [160, 160, 160, 160, 160, 160, 40]);
    assert_eq!(chunks.concat(), whole);

    // The allocation-free form, with a buffer size that does not divide the length.
    let mut reader = WavReader::open(&path).unwrap();
    let mut buffer = [0.0f32; 333];
    let mut collected = Vec::new();
    loop {
        let n = reader.read_chunk(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        collected.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(collected, whole);
    assert_eq!(
        reader.read_chunk(&mut buffer).unwrap(),
        0,
        "stays at the end"
    );

    let mut iter = WavReader::open(&path).unwrap().chunks(0);
    assert_eq!(
        iter.next().unwrap().unwrap().len(),
        1,
        "a chunk size of 0 is treated as 1"
    );
}

#[test]
fn streaming_writer_appends_and_finalizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.wav");
    let samples = signal(10_000, 16_000);
    let mut writer = WavWriter::create(&path, 16_000).unwrap();
    for chunk in samples.chunks(320) {
        writer.write(chunk).unwrap();
    }
    assert_eq!(writer.samples_written(), 10_000);
    writer.finalize().unwrap();
    let (read, rate) = read_wav_mono(&path).unwrap();
    assert_eq!(rate, 16_000);
    assert_eq!(
        read,
        samples.iter().map(|&s| quantised(s)).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 20_000);
}

#[test]
fn in_memory_forms_round_trip() {
    let samples = signal(321, 8_000);
    let bytes = to_wav_bytes(8_000, &samples).unwrap();
    assert_eq!(bytes.len(), 44 + 2 * 321);
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8_000);
    let (read, rate) = from_wav_bytes(&bytes).unwrap();
    assert_eq!(rate, 8_000);
    assert_eq!(
        read,
        samples.iter().map(|&s| quantised(s)).collect::<Vec<_>>()
    );

    let empty = to_wav_bytes(24_000, &[]).unwrap();
    assert_eq!(from_wav_bytes(&empty).unwrap(), (vec![], 24_000));
}

/// A mono WAVE_FORMAT_EXTENSIBLE integer-PCM file at 8 kHz with no samples, built by hand because
/// hound will not write widths it cannot read.
fn extensible_header(valid_bits: u16, container_bits: u16) -> Vec<u8> {
    let block_align = container_bits / 8;
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&0xFFFEu16.to_le_bytes()); // WAVE_FORMAT_EXTENSIBLE
    fmt.extend_from_slice(&1u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&8_000u32.to_le_bytes()); // sample rate
    fmt.extend_from_slice(&(8_000 * u32::from(block_align)).to_le_bytes()); // byte rate
    fmt.extend_from_slice(&block_align.to_le_bytes());
    fmt.extend_from_slice(&container_bits.to_le_bytes());
    fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
    fmt.extend_from_slice(&valid_bits.to_le_bytes());
    fmt.extend_from_slice(&4u32.to_le_bytes()); // channel mask: front centre
    // KSDATAFORMAT_SUBTYPE_PCM: 00000001-0000-0010-8000-00aa00389b71.
    fmt.extend_from_slice(&[
        1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
    ]);
    let mut file = Vec::new();
    file.extend_from_slice(b"RIFF");
    file.extend_from_slice(&(4 + 8 + fmt.len() as u32 + 8).to_le_bytes());
    file.extend_from_slice(b"WAVEfmt ");
    file.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    file.extend_from_slice(&fmt);
    file.extend_from_slice(b"data");
    file.extend_from_slice(&0u32.to_le_bytes());
    file
}

#[test]
fn bad_input_gives_clear_errors() {
    assert!(matches!(
        from_wav_bytes(b"definitely not a wav file, just text"),
        Err(WavError::Malformed(_))
    ));
    assert!(
        matches!(from_wav_bytes(&[]), Err(WavError::Truncated)),
        "{:?}",
        from_wav_bytes(&[])
    );

    // A valid header whose data ends early.
    let bytes = to_wav_bytes(8_000, &signal(100, 8_000)).unwrap();
    assert!(matches!(
        from_wav_bytes(&bytes[..44 + 51]),
        Err(WavError::Truncated)
    ));
    // Header only, cut inside the fmt chunk.
    assert!(matches!(
        from_wav_bytes(&bytes[..30]),
        Err(WavError::Truncated)
    ));

    // Integer PCM at 12 bits per sample in a plain fmt chunk is refused by the header parser.
    let mut odd = bytes.clone();
    odd[34..36].copy_from_slice(&12u16.to_le_bytes());
    let error = from_wav_bytes(&odd).unwrap_err();
    assert!(matches!(error, WavError::Malformed(_)), "{error:?}");
    assert!(error.to_string().contains("bits per sample"), "{error}");

    // 20 valid bits in 24-bit containers (WAVE_FORMAT_EXTENSIBLE): well-formed, not supported.
    assert_eq!(
        from_wav_bytes(&extensible_header(24, 24)).unwrap(),
        (vec![], 8_000)
    );
    let extensible = extensible_header(20, 24);
    let error = from_wav_bytes(&extensible).unwrap_err();
    assert!(
        matches!(
            error,
            WavError::Unsupported {
                encoding: SampleEncoding::Int,
                bits_per_sample: 20
            }
        ),
        "{error:?}"
    );

    // Zero channels in the header.
    let mut zero = bytes.clone();
    zero[22..24].copy_from_slice(&0u16.to_le_bytes());
    assert!(
        matches!(from_wav_bytes(&zero), Err(WavError::Malformed(_))),
        "{:?}",
        from_wav_bytes(&zero)
    );

    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_wav_mono(dir.path().join("missing.wav")),
        Err(WavError::Io(_))
    ));
    assert!(matches!(
        WavWriter::create(dir.path().join("x.wav"), 0),
        Err(WavError::ZeroSampleRate)
    ));
    assert!(matches!(
        to_wav_bytes(0, &[0.0]),
        Err(WavError::ZeroSampleRate)
    ));
    assert!(matches!(
        write_wav_pcm16(dir.path().join("no/such/dir.wav"), 8_000, &[0.0]),
        Err(WavError::Io(_))
    ));
    let message = WavError::Unsupported {
        encoding: SampleEncoding::Float,
        bits_per_sample: 64,
    }
    .to_string();
    assert!(message.contains("Float with 64 bits"), "{message}");
}
