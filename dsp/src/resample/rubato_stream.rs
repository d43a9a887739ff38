//! Streaming wrapper around a `rubato` resampler: arbitrary input chunks in, fixed rubato chunks inside.
//!
//! rubato processes fixed-size chunks. Input is staged until a chunk is full, so the rubato calls (and
//! therefore the output, bit for bit) depend only on the running input, never on how the caller cut it.

use audioadapter_buffers::direct::SequentialSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Resampler as _, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use super::ResampleError;

pub(crate) struct RubatoStream {
    inner: Box<dyn rubato::Resampler<f32>>,
    /// Input waiting for a full rubato chunk; its capacity is one chunk and never grows.
    staged: Vec<f32>,
    /// rubato's input chunk length (fixed for both resampler kinds used here).
    chunk_in: usize,
    /// Input samples accepted since the start of the stream.
    consumed: u64,
    /// Output samples emitted since the start of the stream.
    produced: u64,
    /// Zeros put in front of every stream so that the delay is a whole number of output samples
    /// (see [`RubatoStream::fft`]); 0 for the sinc engine.
    lead_in: usize,
    /// The delay in output samples, lead-in included.
    delay: usize,
}

impl std::fmt::Debug for RubatoStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RubatoStream")
            .field("chunk_in", &self.chunk_in)
            .field("staged", &self.staged.len())
            .field("delay", &self.delay)
            .field("consumed", &self.consumed)
            .field("produced", &self.produced)
            .finish()
    }
}

fn construction(from: u32, to: u32, err: impl std::fmt::Display) -> ResampleError {
    ResampleError::Construction {
        from,
        to,
        reason: err.to_string(),
    }
}

impl RubatoStream {
    /// The synchronous FFT resampler for a fixed rational ratio.
    ///
    /// `FixedSync::Both` makes one FFT block per chunk: `block_in` input samples (rounded up by rubato
    /// to a multiple of `in / gcd`) give exactly `block_in * out / in` output samples.
    ///
    /// rubato reports `fft_size_out / 2` as the delay, but the filter's centre sits at input sample
    /// `fft_size_in / 2` (integer division), which is a fraction of an output sample away from that
    /// (half an output sample when upsampling 24 kHz to 44.1 kHz, for instance) and would cost a sine
    /// 70 dB of SNR against its ideal. Every stream therefore starts with `lead_in` zeros (fewer than
    /// `in / gcd`) that move the centre to a multiple of `in / gcd` input samples, which is a whole
    /// number of output samples: the delay reported is then exact.
    pub(crate) fn fft(in_rate: u32, out_rate: u32, block_in: usize) -> Result<Self, ResampleError> {
        let fft = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            block_in,
            1,
            FixedSync::Both,
        )
        .map_err(|e| construction(in_rate, out_rate, e))?;
        let centre_in = fft.fft_size_in() / 2;
        let g = super::gcd(in_rate, out_rate) as usize;
        let (up, down) = (out_rate as usize / g, in_rate as usize / g);
        let lead_in = (down - centre_in % down) % down;
        let delay = (centre_in + lead_in) / down * up;
        Ok(Self::wrap(Box::new(fft), lead_in, delay))
    }

    /// The asynchronous sinc resampler, for any pair of rates.
    pub(crate) fn sinc(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        let params = SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2)
            .oversampling_factor(256)
            .interpolation(SincInterpolationType::Cubic);
        let ratio = f64::from(out_rate) / f64::from(in_rate);
        let sinc = Async::<f32>::new_sinc(ratio, 1.0, &params, 1024, 1, FixedAsync::Input)
            .map_err(|e| construction(in_rate, out_rate, e))?;
        let delay = sinc.output_delay();
        Ok(Self::wrap(Box::new(sinc), 0, delay))
    }

    fn wrap(inner: Box<dyn rubato::Resampler<f32>>, lead_in: usize, delay: usize) -> Self {
        let chunk_in = inner.input_frames_max();
        let mut stream = RubatoStream {
            staged: Vec::with_capacity(chunk_in),
            inner,
            chunk_in,
            consumed: 0,
            produced: 0,
            lead_in,
            delay,
        };
        stream.reset();
        stream
    }

    pub(crate) fn delay(&self) -> usize {
        self.delay
    }

    /// The most samples one rubato chunk appends (the output must have room for it).
    pub(crate) fn chunk_out_max(&self) -> usize {
        self.inner.output_frames_max()
    }

    pub(crate) fn chunk_in(&self) -> usize {
        self.chunk_in
    }

    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.staged.clear();
        // lead_in < in / gcd <= fft_size_in == chunk_in, so this stays within the staged capacity.
        self.staged.resize(self.lead_in, 0.0);
        self.consumed = 0;
        self.produced = 0;
    }

    pub(crate) fn process_into(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        self.consumed += input.len() as u64;
        while !input.is_empty() {
            let take = (self.chunk_in - self.staged.len()).min(input.len());
            self.staged.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.staged.len() == self.chunk_in {
                self.run_chunk(out);
            }
        }
    }

    /// Pad with zeros until `total` outputs are out, emit exactly those, and start a new stream.
    pub(crate) fn flush_into(&mut self, total: u64, out: &mut Vec<f32>) {
        while self.produced < total {
            let keep = out.len();
            self.staged.resize(self.chunk_in, 0.0);
            let before = self.produced;
            self.run_chunk(out);
            if self.produced > total {
                out.truncate(keep + (total - before) as usize);
                self.produced = total;
            }
        }
        self.reset();
    }

    fn run_chunk(&mut self, out: &mut Vec<f32>) {
        let frames_out = self.inner.output_frames_next();
        let start = out.len();
        out.resize(start + frames_out, 0.0);
        let produced = {
            // Both adapters wrap buffers sized from rubato's own queries just above, so these can
            // only fail on a bug in this wrapper.
            let input = SequentialSlice::new(&self.staged[..], 1, self.chunk_in)
                .expect("staged buffer holds one full chunk");
            let mut output = SequentialSlice::new_mut(&mut out[start..], 1, frames_out)
                .expect("output was resized to output_frames_next");
            let (_, produced) = self
                .inner
                .process_into_buffer(&input, &mut output, None)
                .expect("rubato accepts buffers sized from its own queries");
            produced
        };
        out.truncate(start + produced);
        self.produced += produced as u64;
        self.staged.clear();
    }
}
