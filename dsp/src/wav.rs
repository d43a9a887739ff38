//! WAV reading and writing (through `hound`), always ending in mono f32.
//!
//! Reading accepts any channel count and integer PCM of 8, 16, 24 or 32 bits or 32-bit float,
//! and averages the channels into mono f32 (integers scaled by `1 / 2^(bits-1)`, so 16-bit mono
//! reads exactly like [`crate::pcm::decode_pcm16le`]). Writing produces mono PCM16 with the
//! rounding and clipping of [`crate::pcm::sample_f32_to_i16`].
//!
//! - [`WavReader`] streams: it reads a chunk of mono samples at a time into a caller buffer
//!   ([`WavReader::read_chunk`]) or as an iterator of chunks ([`WavReader::chunks`]), in constant
//!   memory whatever the file size.
//! - [`WavWriter`] streams mono PCM16 out and patches the header lengths on
//!   [`WavWriter::finalize`].
//! - [`read_wav_mono`], [`write_wav_pcm16`], [`from_wav_bytes`] and [`to_wav_bytes`] are the
//!   whole-buffer conveniences (they allocate; none of this module is meant for the realtime path).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, Write};
use std::path::Path;

use crate::pcm::sample_f32_to_i16;

/// Why WAV data could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The underlying file or stream failed.
    #[error("WAV I/O failed: {0}")]
    Io(#[source] io::Error),
    /// The data ends before the header says it should.
    #[error("WAV data is truncated: it ends before the length its header declares")]
    Truncated,
    /// The bytes are not a well-formed WAV file.
    #[error("malformed WAV data: {0}")]
    Malformed(&'static str),
    /// A well-formed WAV file in an encoding this module does not read.
    #[error(
        "unsupported WAV encoding: {encoding:?} with {bits_per_sample} bits per sample \
         (supported: integer PCM 8/16/24/32, float 32)"
    )]
    Unsupported {
        /// Integer or float samples.
        encoding: SampleEncoding,
        /// Bits per sample the header declares.
        bits_per_sample: u16,
    },
    /// A sample rate of zero was given to a writer.
    #[error("sample rate must be positive")]
    ZeroSampleRate,
    /// The audio does not fit in a WAV file (its data chunk would exceed 4 GiB).
    #[error("audio too long for a WAV file (data chunk over 4 GiB)")]
    TooLong,
}

impl From<hound::Error> for WavError {
    fn from(error: hound::Error) -> Self {
        match error {
            // hound reports a short read either as the std kind or, from its own `read_into`,
            // as `Other` with this fixed message.
            hound::Error::IoError(io)
                if io.kind() == io::ErrorKind::UnexpectedEof
                    || io.to_string() == "Failed to read enough bytes." =>
            {
                WavError::Truncated
            }
            hound::Error::IoError(io) => WavError::Io(io),
            hound::Error::FormatError(what) => WavError::Malformed(what),
            hound::Error::UnfinishedSample => WavError::Malformed("unfinished sample"),
            // Reading validates the encoding up front, so these arise only from odd headers
            // (for example a valid-bits field that does not match the container width).
            hound::Error::TooWide
            | hound::Error::Unsupported
            | hound::Error::InvalidSampleFormat => {
                WavError::Malformed("sample width or format does not match the header")
            }
        }
    }
}

/// How samples are stored in a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleEncoding {
    /// Signed integer PCM (8-bit WAV is unsigned on disk; it reads as signed here).
    Int,
    /// IEEE float.
    Float,
}

/// What a WAV header says about its audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels per frame; the reader averages them into one.
    pub channels: u16,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// Integer or float samples.
    pub encoding: SampleEncoding,
    /// Frames in the file (per-channel sample count), as the header declares.
    pub frames: u32,
}

/// A streaming WAV reader that yields mono f32.
pub struct WavReader<R> {
    /// The hound reader positioned at the next unread sample.
    inner: hound::WavReader<R>,
    /// The header, validated to be an encoding we read.
    info: WavInfo,
    /// Multiplier taking the sum of one frame's raw samples to the mono f32 average.
    frame_scale: f32,
}

impl<R> std::fmt::Debug for WavReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavReader")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl WavReader<BufReader<File>> {
    /// Opens a WAV file and reads its header.
    ///
    /// # Errors
    /// [`WavError::Io`] if the file cannot be opened, otherwise as [`WavReader::new`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WavError> {
        let file = File::open(path).map_err(WavError::Io)?;
        Self::new(BufReader::new(file))
    }
}

impl<R: Read> WavReader<R> {
    /// Reads the header from `reader`; the samples are read on demand.
    ///
    /// # Errors
    /// [`WavError::Malformed`] or [`WavError::Truncated`] for a bad header,
    /// [`WavError::Unsupported`] for an encoding this module does not read.
    pub fn new(reader: R) -> Result<Self, WavError> {
        let inner = hound::WavReader::new(reader)?;
        let spec = inner.spec();
        let encoding = match spec.sample_format {
            hound::SampleFormat::Int => SampleEncoding::Int,
            hound::SampleFormat::Float => SampleEncoding::Float,
        };
        let sample_scale = match (encoding, spec.bits_per_sample) {
            (SampleEncoding::Int, bits @ (8 | 16 | 24 | 32)) => 1.0 / (1u64 << (bits - 1)) as f32,
            (SampleEncoding::Float, 32) => 1.0,
            (encoding, bits_per_sample) => {
                return Err(WavError::Unsupported {
                    encoding,
                    bits_per_sample,
                });
            }
        };
        if spec.channels == 0 {
            return Err(WavError::Malformed("zero channels"));
        }
        if spec.sample_rate == 0 {
            return Err(WavError::Malformed("zero sample rate"));
        }
        let info = WavInfo {
            sample_rate: spec.sample_rate,
            channels: spec.channels,
            bits_per_sample: spec.bits_per_sample,
            encoding,
            frames: inner.duration(),
        };
        Ok(WavReader {
            inner,
            info,
            frame_scale: sample_scale / f32::from(spec.channels),
        })
    }

    /// The header of the file.
    pub fn info(&self) -> WavInfo {
        self.info
    }

    /// Frames per second.
    pub fn sample_rate(&self) -> u32 {
        self.info.sample_rate
    }

    /// Reads up to `out.len()` mono samples (one per frame) into `out` and returns how many were
    /// written; 0 means the end of the data. Does not allocate.
    ///
    /// # Errors
    /// [`WavError::Truncated`] if the data ends early (including in the middle of a frame),
    /// [`WavError::Io`] if the stream fails.
    pub fn read_chunk(&mut self, out: &mut [f32]) -> Result<usize, WavError> {
        match self.info.encoding {
            SampleEncoding::Int => self.read_frames::<i32>(out, |raw| raw as f32),
            SampleEncoding::Float => self.read_frames::<f32>(out, |raw| raw),
        }
    }

    /// Reads frames of raw samples of type `S`, averaging each into one f32.
    fn read_frames<S: hound::Sample>(
        &mut self,
        out: &mut [f32],
        to_f32: impl Fn(S) -> f32,
    ) -> Result<usize, WavError> {
        let channels = usize::from(self.info.channels);
        let frame_scale = self.frame_scale;
        let mut samples = self.inner.samples::<S>();
        for (written, slot) in out.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for channel in 0..channels {
                match samples.next() {
                    Some(sample) => sum += to_f32(sample?),
                    None if channel == 0 => return Ok(written),
                    None => return Err(WavError::Truncated),
                }
            }
            *slot = sum * frame_scale;
        }
        Ok(out.len())
    }

    /// Turns the reader into an iterator of mono chunks of `frames` samples each (the last one may
    /// be shorter). Each chunk is a fresh `Vec`; memory stays bounded by one chunk. A size of 0 is
    /// treated as 1.
    pub fn chunks(self, frames: usize) -> WavChunks<R> {
        WavChunks {
            reader: self,
            frames: frames.max(1),
            done: false,
        }
    }

    /// Reads all remaining samples into one vector.
    ///
    /// # Errors
    /// As [`WavReader::read_chunk`].
    pub fn read_to_end(mut self) -> Result<Vec<f32>, WavError> {
        // The declared length is a hint only: a lying header must not make us allocate gigabytes.
        let hint = (self.info.frames as usize).min(1 << 22);
        let mut samples = Vec::with_capacity(hint);
        let mut chunk = [0.0f32; 4096];
        loop {
            let count = self.read_chunk(&mut chunk)?;
            if count == 0 {
                return Ok(samples);
            }
            samples.extend_from_slice(&chunk[..count]);
        }
    }
}

/// Iterator of mono chunks from [`WavReader::chunks`]. Stops after the first error.
pub struct WavChunks<R> {
    reader: WavReader<R>,
    /// Samples per chunk, at least 1.
    frames: usize,
    /// Set after the end of the data or an error, so the iterator is fused.
    done: bool,
}

impl<R> std::fmt::Debug for WavChunks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavChunks")
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Iterator for WavChunks<R> {
    type Item = Result<Vec<f32>, WavError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut chunk = vec![0.0; self.frames];
        match self.reader.read_chunk(&mut chunk) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(count) => {
                chunk.truncate(count);
                Some(Ok(chunk))
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

impl<R: Read> std::iter::FusedIterator for WavChunks<R> {}

/// A streaming writer of mono PCM16 WAV.
pub struct WavWriter<W: Write + Seek> {
    inner: hound::WavWriter<W>,
    /// Samples written so far, to refuse a data chunk over the 4 GiB the header can describe.
    written: u64,
}

impl<W: Write + Seek> std::fmt::Debug for WavWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavWriter")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// Most PCM16 samples a WAV data chunk (u32 byte length) can hold.
const MAX_PCM16_SAMPLES: u64 = (u32::MAX / 2) as u64;

impl WavWriter<BufWriter<File>> {
    /// Creates (or truncates) a WAV file at `path` for mono PCM16 at `sample_rate`.
    ///
    /// # Errors
    /// [`WavError::ZeroSampleRate`], or [`WavError::Io`] if the file cannot be created.
    pub fn create(path: impl AsRef<Path>, sample_rate: u32) -> Result<Self, WavError> {
        if sample_rate == 0 {
            return Err(WavError::ZeroSampleRate);
        }
        let file = File::create(path).map_err(WavError::Io)?;
        Self::new(BufWriter::new(file), sample_rate)
    }
}

impl<W: Write + Seek> WavWriter<W> {
    /// Starts a mono PCM16 WAV stream at `sample_rate` on `writer` (the header is written now and
    /// patched by [`WavWriter::finalize`]).
    ///
    /// # Errors
    /// [`WavError::ZeroSampleRate`], or [`WavError::Io`] if the header cannot be written.
    pub fn new(writer: W, sample_rate: u32) -> Result<Self, WavError> {
        if sample_rate == 0 {
            return Err(WavError::ZeroSampleRate);
        }
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(WavWriter {
            inner: hound::WavWriter::new(writer, spec)?,
            written: 0,
        })
    }

    /// Appends mono samples (rounded and clipped to PCM16).
    ///
    /// # Errors
    /// [`WavError::TooLong`] if the file would exceed what a WAV header can describe (nothing of
    /// `samples` is written then), [`WavError::Io`] if the stream fails.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), WavError> {
        let total = self.written + samples.len() as u64;
        if total > MAX_PCM16_SAMPLES {
            return Err(WavError::TooLong);
        }
        for &sample in samples {
            self.inner.write_sample(sample_f32_to_i16(sample))?;
        }
        self.written = total;
        Ok(())
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.written
    }

    /// Patches the header lengths and flushes. Dropping a writer without calling this finalizes
    /// too but cannot report errors.
    ///
    /// # Errors
    /// [`WavError::Io`] if the final writes fail.
    pub fn finalize(self) -> Result<(), WavError> {
        self.inner.finalize()?;
        Ok(())
    }
}

/// Reads a whole WAV file as mono f32. Returns the samples and the sample rate.
///
/// # Errors
/// As [`WavReader::open`] and [`WavReader::read_chunk`].
pub fn read_wav_mono(path: impl AsRef<Path>) -> Result<(Vec<f32>, u32), WavError> {
    let reader = WavReader::open(path)?;
    let rate = reader.sample_rate();
    Ok((reader.read_to_end()?, rate))
}

/// Reads WAV bytes held in memory as mono f32. Returns the samples and the sample rate.
///
/// # Errors
/// As [`WavReader::new`] and [`WavReader::read_chunk`].
pub fn from_wav_bytes(bytes: &[u8]) -> Result<(Vec<f32>, u32), WavError> {
    let reader = WavReader::new(Cursor::new(bytes))?;
    let rate = reader.sample_rate();
    Ok((reader.read_to_end()?, rate))
}

/// Writes `samples` as a mono PCM16 WAV file at `path`.
///
/// # Errors
/// As [`WavWriter::create`], [`WavWriter::write`] and [`WavWriter::finalize`].
pub fn write_wav_pcm16(
    path: impl AsRef<Path>,
    sample_rate: u32,
    samples: &[f32],
) -> Result<(), WavError> {
    let mut writer = WavWriter::create(path, sample_rate)?;
    writer.write(samples)?;
    writer.finalize()
}

/// Encodes `samples` as the bytes of a mono PCM16 WAV file (44-byte header + data).
///
/// # Errors
/// [`WavError::ZeroSampleRate`], or [`WavError::TooLong`] past 4 GiB of data.
pub fn to_wav_bytes(sample_rate: u32, samples: &[f32]) -> Result<Vec<u8>, WavError> {
    let mut bytes = Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    let mut writer = WavWriter::new(&mut bytes, sample_rate)?;
    writer.write(samples)?;
    writer.finalize()?;
    Ok(bytes.into_inner())
}
