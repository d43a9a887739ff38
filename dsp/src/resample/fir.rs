//! The streaming polyphase FIR engine for small integer ratios (see [`super::design`]).

use super::design::{FilterBank, design};
use super::kernel::Kernel;

/// Input samples handled per internal step. Bounds every internal buffer, so a caller may pass a
/// one-second chunk without the engine allocating.
const BLOCK: usize = 4096;

/// Zeros fed at the end of a stream by [`PolyphaseFir::flush_into`].
const ZEROS: [f32; 512] = [0.0; 512];

#[derive(Debug)]
pub(crate) struct PolyphaseFir {
    bank: FilterBank,
    kernel: Kernel,
    /// The longest look-back of any sub-filter, in de-interleaved stream samples.
    history: usize,
    /// De-interleaved input: `streams[b][k] = x[M * (base + k) + b]`. Samples before the first input
    /// are zeros, which is what a filter that starts from silence sees.
    streams: Vec<Vec<f32>>,
    /// Stream index (`s` in `x[M s + b]`) of `streams[b][0]`; negative while the initial zeros are kept.
    base: i64,
    /// Capacity reserved for every stream at construction; never exceeded.
    stream_capacity: usize,
    /// Per output phase, the outputs of the current block before interleaving (unused when `L == 1`).
    scratch: Vec<Vec<f32>>,
    /// Input samples accepted since the start of the stream.
    consumed: u64,
    /// Output samples emitted since the start of the stream.
    produced: u64,
}

impl PolyphaseFir {
    pub(crate) fn new(up: usize, down: usize) -> Self {
        Self::with_kernel(up, down, Kernel::detect())
    }

    pub(crate) fn with_kernel(up: usize, down: usize, kernel: Kernel) -> Self {
        let bank = design(up, down);
        let history = bank.history();
        // History, one block, and slack for the one-sample rounding on either side of a block.
        let stream_capacity = history + BLOCK / down + 8;
        let per_phase = BLOCK / down + 4;
        let mut engine = PolyphaseFir {
            streams: (0..down)
                .map(|_| Vec::with_capacity(stream_capacity))
                .collect(),
            scratch: if up > 1 {
                (0..up).map(|_| Vec::with_capacity(per_phase)).collect()
            } else {
                Vec::new()
            },
            bank,
            kernel,
            history,
            base: 0,
            stream_capacity,
            consumed: 0,
            produced: 0,
        };
        engine.reset();
        engine
    }

    pub(crate) fn reset(&mut self) {
        for stream in &mut self.streams {
            stream.clear();
            stream.resize(self.history, 0.0);
        }
        self.base = -(self.history as i64);
        self.consumed = 0;
        self.produced = 0;
    }

    pub(crate) fn delay(&self) -> usize {
        self.bank.delay_out
    }

    pub(crate) fn taps_per_output(&self) -> f64 {
        self.bank.taps_per_output()
    }

    /// Outputs that can be computed once `consumed` inputs are in: output `j` needs input
    /// `floor(j * M / L)`, so this is `ceil(consumed * L / M)`.
    fn ready(&self, consumed: u64) -> u64 {
        (consumed * self.bank.up as u64).div_ceil(self.bank.down as u64)
    }

    /// Append the outputs that `input` makes computable.
    pub(crate) fn process_into(&mut self, input: &[f32], out: &mut Vec<f32>) {
        for block in input.chunks(BLOCK) {
            self.block(block, u64::MAX, out);
        }
    }

    /// Feed zeros until `total` outputs (counted from the start of the stream) are out, emit exactly
    /// those, and start a new stream.
    pub(crate) fn flush_into(&mut self, total: u64, out: &mut Vec<f32>) {
        if total > self.produced {
            // Output `total - 1` needs input `floor((total - 1) * M / L)`.
            let needed = (total - 1) * self.bank.down as u64 / self.bank.up as u64 + 1;
            let mut zeros = needed.saturating_sub(self.consumed);
            while self.produced < total {
                let n = zeros.min(ZEROS.len() as u64) as usize;
                self.block(&ZEROS[..n], total, out);
                zeros -= n as u64;
            }
        }
        self.reset();
    }

    fn block(&mut self, input: &[f32], cap: u64, out: &mut Vec<f32>) {
        let down = self.bank.down;
        let up = self.bank.up;
        let per_stream = input.len().div_ceil(down);
        if self
            .streams
            .iter()
            .any(|s| s.len() + per_stream > self.stream_capacity)
        {
            self.compact();
        }
        // De-interleave. Input sample `consumed + k` belongs to stream `(consumed + k) % M`.
        let phase0 = (self.consumed % down as u64) as usize;
        match down {
            1 => self.streams[0].extend_from_slice(input),
            2 => deinterleave::<2>(input, phase0, &mut self.streams),
            3 => deinterleave::<3>(input, phase0, &mut self.streams),
            4 => deinterleave::<4>(input, phase0, &mut self.streams),
            5 => deinterleave::<5>(input, phase0, &mut self.streams),
            _ => deinterleave_any(input, phase0, &mut self.streams),
        }
        self.consumed += input.len() as u64;

        let end = self.ready(self.consumed).min(cap);
        if end <= self.produced {
            return;
        }
        let count = (end - self.produced) as usize;
        let start = out.len();
        out.resize(start + count, 0.0);
        if up == 1 {
            let t0 = self.produced as i64;
            Self::phase(
                self.kernel,
                &self.bank.phases[0],
                &self.streams,
                t0 - self.base,
                &mut out[start..],
            );
        } else {
            let dst = &mut out[start..];
            for a in 0..up {
                // Outputs j = L t + a with produced <= j < end.
                let t0 = (self.produced + (up - 1 - a) as u64) / up as u64;
                let t1 = (end + (up - 1 - a) as u64) / up as u64;
                let n = t1.saturating_sub(t0) as usize;
                let scratch = &mut self.scratch[a];
                scratch.clear();
                scratch.resize(n, 0.0);
                if n == 0 {
                    continue;
                }
                Self::phase(
                    self.kernel,
                    &self.bank.phases[a],
                    &self.streams,
                    t0 as i64 - self.base,
                    scratch,
                );
            }
            let phase0 = (self.produced % up as u64) as usize;
            match up {
                2 => interleave::<2>(&self.scratch, phase0, dst),
                3 => interleave::<3>(&self.scratch, phase0, dst),
                4 => interleave::<4>(&self.scratch, phase0, dst),
                5 => interleave::<5>(&self.scratch, phase0, dst),
                _ => interleave_any(&self.scratch, phase0, dst),
            }
        }
        self.produced = end;
    }

    /// Compute outputs `y_a[t0 ..]` of one phase into `y` (zeroed by the caller or freshly resized).
    /// `t0_rel` is `t0 - base`.
    fn phase(
        kernel: Kernel,
        subs: &[super::design::SubFilter],
        streams: &[Vec<f32>],
        t0_rel: i64,
        y: &mut [f32],
    ) {
        let n = y.len();
        for sub in subs {
            // The filter reads x_b[t - last ..= t - first] for t in t0 .. t0 + n.
            let start = (t0_rel - sub.last as i64) as usize;
            let x = &streams[sub.input_phase][start..start + n + sub.taps.len() - 1];
            kernel.run(x, &sub.taps, y);
        }
    }

    /// Drop stream samples no future output reads.
    fn compact(&mut self) {
        // The next output is j = produced, whose lowest-phase t is floor(produced / L); the filters look
        // back at most `history` samples from there.
        let keep_from = (self.produced / self.bank.up as u64) as i64 - self.history as i64;
        let shortest = self.streams.iter().map(Vec::len).min().unwrap_or(0) as i64;
        let drop = (keep_from - self.base).clamp(0, shortest) as usize;
        if drop == 0 {
            return;
        }
        for stream in &mut self.streams {
            stream.copy_within(drop.., 0);
            stream.truncate(stream.len() - drop);
        }
        self.base += drop as i64;
    }
}

/// Append `input` to the `M` streams, sample `k` going to stream `(phase0 + k) % M`.
///
/// The constant `M` lets LLVM turn the middle loop into vector shuffles.
fn deinterleave<const M: usize>(input: &[f32], phase0: usize, streams: &mut [Vec<f32>]) {
    // Up to the first sample of stream 0, one at a time.
    let lead = ((M - phase0) % M).min(input.len());
    for (k, &v) in input[..lead].iter().enumerate() {
        streams[phase0 + k].push(v);
    }
    let body = &input[lead..];
    let groups = body.len() / M;
    let mut rest = streams.iter_mut();
    let mut dst: [&mut [f32]; M] = std::array::from_fn(|_| {
        let stream = rest.next().expect("one stream per input phase");
        let old = stream.len();
        stream.resize(old + groups, 0.0);
        &mut stream[old..]
    });
    for (g, frame) in body.chunks_exact(M).enumerate() {
        for (b, d) in dst.iter_mut().enumerate() {
            d[g] = frame[b];
        }
    }
    for (b, &v) in body[groups * M..].iter().enumerate() {
        streams[b].push(v);
    }
}

/// [`deinterleave`] for any number of streams.
fn deinterleave_any(input: &[f32], phase0: usize, streams: &mut [Vec<f32>]) {
    let m = streams.len();
    let mut b = phase0;
    for &v in input {
        streams[b].push(v);
        b += 1;
        if b == m {
            b = 0;
        }
    }
}

/// Write the per-phase outputs `scratch[a]` into `dst` in time order; `dst[0]` is phase `phase0`.
fn interleave<const L: usize>(scratch: &[Vec<f32>], phase0: usize, dst: &mut [f32]) {
    let lead = ((L - phase0) % L).min(dst.len());
    for (k, d) in dst[..lead].iter_mut().enumerate() {
        *d = scratch[phase0 + k][0];
    }
    // From here on every phase's next output sits at index `skip[a]` of its scratch.
    let skip: [usize; L] = std::array::from_fn(|a| usize::from(a >= phase0 && lead > 0));
    let body = &mut dst[lead..];
    let groups = body.len() / L;
    let src: [&[f32]; L] =
        std::array::from_fn(|a| scratch[a].get(skip[a]..skip[a] + groups).unwrap_or(&[]));
    for (g, frame) in body.chunks_exact_mut(L).enumerate() {
        for (a, d) in frame.iter_mut().enumerate() {
            *d = src[a][g];
        }
    }
    for (a, d) in body[groups * L..].iter_mut().enumerate() {
        *d = scratch[a][skip[a] + groups];
    }
}

/// [`interleave`] for any number of phases.
fn interleave_any(scratch: &[Vec<f32>], phase0: usize, dst: &mut [f32]) {
    let l = scratch.len();
    let mut next = [0usize; 8];
    let mut a = phase0;
    for d in dst {
        *d = scratch[a][next[a]];
        next[a] += 1;
        a += 1;
        if a == l {
            a = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(up: usize, down: usize, kernel: Kernel, input: &[f32]) -> Vec<f32> {
        let mut fir = PolyphaseFir::with_kernel(up, down, kernel);
        let mut out = Vec::new();
        // Uneven chunks, including ones larger than an internal block.
        let mut rest = input;
        for size in [1usize, 7, 5000, 480, 3, 9000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*size).min(rest.len());
            fir.process_into(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        let total = fir.delay() as u64 + (input.len() as u64 * up as u64).div_ceil(down as u64);
        fir.flush_into(total, &mut out);
        out
    }

    #[test]
    fn every_kernel_gives_the_same_stream() {
        let input: Vec<f32> = (0..20000)
            .map(|n| (n as f32 * 0.37).sin() * 0.5 + (n as f32 * 0.011).cos() * 0.3)
            .collect();
        for (up, down) in [(1, 2), (2, 1), (3, 2), (2, 3), (1, 6), (6, 1)] {
            let detected = run(up, down, Kernel::detect(), &input);
            let portable = run(up, down, Kernel::Portable, &input);
            let fma = run(up, down, Kernel::ScalarFma, &input);
            assert_eq!(detected.len(), portable.len());
            for (a, b) in detected.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-6, "{up}/{down}: {a} vs {b}");
            }
            if Kernel::detect() != Kernel::Portable {
                // The SIMD kernels round exactly like scalar FMA.
                let same = detected
                    .iter()
                    .zip(&fma)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{up}/{down}: SIMD differs from scalar FMA");
            }
        }
    }
}
