//! Filter design for the polyphase FIR path: a Kaiser-windowed sinc, split into sub-filters.
//!
//! A rational conversion by `L/M` (up by `L`, down by `M`, coprime) is the textbook chain
//! "insert `L - 1` zeros, low-pass at `L * in_rate`, keep every `M`-th sample". The prototype low-pass
//! `h` (length `K`, odd, linear phase) is decomposed so that nothing is computed for the inserted
//! zeros nor for the discarded samples:
//!
//! ```text
//! y[L*t + a] = sum_b sum_d g[a][b][d] * x[M*(t - d) + b],   g[a][b][d] = h[L*M*d + a*M - b*L]
//! ```
//!
//! Output phase `a` (`0..L`) is a sum of plain FIR filters over the input phases `b` (`0..M`), each a
//! contiguous convolution over a de-interleaved input stream. That is the shape the SIMD kernel wants:
//! one coefficient broadcast against many consecutive outputs.
//!
//! The cutoff sits at half the lower of the two rates with a transition band of `0.45 .. 0.55` of that
//! rate (see [`PASSBAND_EDGE`], [`STOPBAND_EDGE`]). Aliases and images can therefore only land in
//! `0.45 .. 0.5` of the lower rate, above the passband; everything below `0.45 * min_rate` is clean to
//! the stopband attenuation. The symmetric band makes `h` a Nyquist filter whose every `R`-th tap from
//! the centre is exactly zero (`R = L * in_rate / min_rate`), so whole sub-filters collapse to one tap,
//! which is a large part of why this path beats a generic FFT resampler.

/// Edge of the passband as a fraction of the lower of the two rates.
pub(crate) const PASSBAND_EDGE: f64 = 0.45;
/// Start of the stopband as a fraction of the lower of the two rates.
pub(crate) const STOPBAND_EDGE: f64 = 0.55;
/// Stopband attenuation the Kaiser formulas are asked for (dB): 120 dB is the rejection of libsoxr's
/// HQ setting (20 bits), which this path is compared against. The measured figure is checked in the
/// tests below; the passband ripple of a Kaiser design is of the same order (about 1e-6 here).
pub(crate) const ATTENUATION_DB: f64 = 120.0;

/// One FIR sub-filter of an output phase: `y_a[t] += sum_e taps[e] * x_b[t - last + e]`.
#[derive(Debug, Clone)]
pub(crate) struct SubFilter {
    /// The input phase (de-interleaved stream) this filter reads.
    pub(crate) input_phase: usize,
    /// The largest delay `d` (in stream samples) with a non-zero coefficient. The filter reads
    /// `x_b[t - last ..= t - first]`.
    pub(crate) last: usize,
    /// Coefficients in reading order, i.e. `g[a][b][last - e]`, trimmed of exact zeros at both ends.
    pub(crate) taps: Vec<f32>,
}

/// The designed filter bank for one `L/M` conversion.
#[derive(Debug, Clone)]
pub(crate) struct FilterBank {
    /// Interpolation factor.
    pub(crate) up: usize,
    /// Decimation factor.
    pub(crate) down: usize,
    /// Sub-filters per output phase (`phases.len() == up`).
    pub(crate) phases: Vec<Vec<SubFilter>>,
    /// Delay of the whole conversion in output samples; exact because `(K - 1) / 2` is built to be a
    /// multiple of `up * down`.
    pub(crate) delay_out: usize,
}

impl FilterBank {
    /// The history (in de-interleaved stream samples) the filters need behind the current output.
    pub(crate) fn history(&self) -> usize {
        self.phases
            .iter()
            .flatten()
            .map(|sub| sub.last)
            .max()
            .unwrap_or(0)
    }

    /// Multiply-adds per output sample, averaged over the output phases (for docs and benches).
    pub(crate) fn taps_per_output(&self) -> f64 {
        let total: usize = self.phases.iter().flatten().map(|sub| sub.taps.len()).sum();
        total as f64 / self.up as f64
    }
}

/// Zeroth-order modified Bessel function of the first kind (power series; converges fast for the
/// arguments a Kaiser window uses, below 15).
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..200 {
        let f = half / k as f64;
        term *= f * f;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Kaiser's beta for a stopband attenuation in dB.
fn kaiser_beta(attenuation_db: f64) -> f64 {
    if attenuation_db > 50.0 {
        0.1102 * (attenuation_db - 8.7)
    } else if attenuation_db > 21.0 {
        0.5842 * (attenuation_db - 21.0).powf(0.4) + 0.07886 * (attenuation_db - 21.0)
    } else {
        0.0
    }
}

/// The prototype low-pass at `up * in_rate` for a conversion by `up/down` (coprime, not both 1).
///
/// Returns `h` with odd length `K` and `(K - 1) / 2` a multiple of `up * down`, with a DC gain of `up`
/// (the interpolation gain) before the per-phase normalisation in [`design`].
pub(crate) fn prototype(up: usize, down: usize) -> Vec<f64> {
    // R: the prototype's cutoff is fs_up / (2 R); R is an integer because the lower rate is either the
    // input rate (R = up) or the output rate (R = down).
    let r = up.max(down) as f64;
    // Kaiser's length estimate for the transition width (STOPBAND_EDGE - PASSBAND_EDGE) / R of fs_up.
    let transition = 2.0 * std::f64::consts::PI * (STOPBAND_EDGE - PASSBAND_EDGE) / r;
    let order_min = ((ATTENUATION_DB - 7.95) / (2.285 * transition)).ceil() as usize;
    let step = 2 * up * down;
    let order = order_min.div_ceil(step) * step;
    let len = order + 1;
    let centre = order / 2;
    let beta = kaiser_beta(ATTENUATION_DB);
    let i0_beta = bessel_i0(beta);
    let r_int = up.max(down) as i64;
    (0..len)
        .map(|n| {
            let m = n as i64 - centre as i64;
            // sinc(m / R), exactly zero on the Nyquist zeros so that the sub-filters made of them
            // vanish instead of carrying rounding noise.
            let sinc = if m == 0 {
                1.0
            } else if m % r_int == 0 {
                0.0
            } else {
                let x = std::f64::consts::PI * m as f64 / r;
                x.sin() / x
            };
            let pos = 2.0 * n as f64 / order as f64 - 1.0;
            let window = bessel_i0(beta * (1.0 - pos * pos).max(0.0).sqrt()) / i0_beta;
            up as f64 / r * sinc * window
        })
        .collect()
}

/// Design the polyphase bank for `up/down` (coprime, not both 1).
pub(crate) fn design(up: usize, down: usize) -> FilterBank {
    let h = prototype(up, down);
    let len = h.len();
    let step = up * down;
    let mut phases = Vec::with_capacity(up);
    for a in 0..up {
        // Collect g[a][b][d] = h[L*M*d + a*M - b*L] for every input phase in f64 first, so the phase
        // can be normalised to a DC gain of exactly 1 before rounding to f32.
        let mut raw: Vec<(usize, Vec<f64>)> = Vec::with_capacity(down);
        for b in 0..down {
            let offset = (a * down) as i64 - (b * up) as i64;
            let mut g = Vec::new();
            let mut d = 0i64;
            loop {
                let n = step as i64 * d + offset;
                if n >= len as i64 {
                    break;
                }
                g.push(if n >= 0 { h[n as usize] } else { 0.0 });
                d += 1;
            }
            raw.push((b, g));
        }
        let dc: f64 = raw.iter().flat_map(|(_, g)| g.iter()).sum();
        let mut subs = Vec::new();
        for (b, g) in raw {
            let Some(first) = g.iter().position(|&c| c != 0.0) else {
                continue;
            };
            let last = g.iter().rposition(|&c| c != 0.0).unwrap_or(first);
            let taps = (first..=last).rev().map(|d| (g[d] / dc) as f32).collect();
            subs.push(SubFilter {
                input_phase: b,
                last,
                taps,
            });
        }
        phases.push(subs);
    }
    FilterBank {
        up,
        down,
        phases,
        delay_out: (len - 1) / 2 / down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gain of the prototype (normalised by `up`) at `freq` given as a fraction of the lower rate.
    fn gain(h: &[f64], up: usize, down: usize, freq: f64) -> f64 {
        let r = up.max(down) as f64;
        // freq * min_rate / fs_up = freq / r cycles per prototype sample.
        let w = 2.0 * std::f64::consts::PI * freq / r;
        let (mut re, mut im) = (0.0, 0.0);
        for (n, c) in h.iter().enumerate() {
            re += c * (w * n as f64).cos();
            im -= c * (w * n as f64).sin();
        }
        (re * re + im * im).sqrt() / up as f64
    }

    fn check_response(up: usize, down: usize) {
        let h = prototype(up, down);
        assert_eq!(h.len() % 2, 1);
        assert_eq!(((h.len() - 1) / 2) % (up * down), 0);
        let mut worst_pass: f64 = 0.0;
        let mut worst_stop: f64 = 0.0;
        for i in 0..=400 {
            let f = PASSBAND_EDGE * i as f64 / 400.0;
            worst_pass = worst_pass.max((gain(&h, up, down, f) - 1.0).abs());
        }
        // The stopband runs to fs_up / 2, i.e. r / 2 in units of the lower rate.
        let top = up.max(down) as f64 / 2.0;
        for i in 0..=4000 {
            let f = STOPBAND_EDGE + (top - STOPBAND_EDGE) * i as f64 / 4000.0;
            worst_stop = worst_stop.max(gain(&h, up, down, f));
        }
        let stop_db = 20.0 * worst_stop.log10();
        assert!(
            worst_pass < 5e-6,
            "{up}/{down}: passband ripple {worst_pass}"
        );
        assert!(stop_db < -115.0, "{up}/{down}: stopband {stop_db:.1} dB");
    }

    #[test]
    fn prototypes_meet_the_specification() {
        for (up, down) in [
            (1, 2),
            (2, 1),
            (3, 2),
            (2, 3),
            (1, 3),
            (3, 1),
            (1, 6),
            (6, 1),
        ] {
            check_response(up, down);
        }
    }

    #[test]
    fn each_output_phase_has_unit_dc_gain() {
        for (up, down) in [(1, 2), (2, 1), (3, 2), (2, 3), (1, 6)] {
            let bank = design(up, down);
            for (a, phase) in bank.phases.iter().enumerate() {
                let dc: f64 = phase
                    .iter()
                    .flat_map(|s| s.taps.iter())
                    .map(|&c| f64::from(c))
                    .sum();
                assert!((dc - 1.0).abs() < 1e-6, "{up}/{down} phase {a}: {dc}");
            }
        }
    }

    #[test]
    fn nyquist_zeros_collapse_sub_filters() {
        // 2:1 decimation is a half-band filter: one input phase is a single centre tap.
        let bank = design(1, 2);
        let lens: Vec<usize> = bank.phases[0].iter().map(|s| s.taps.len()).collect();
        assert!(lens.contains(&1), "{lens:?}");
        assert!(bank.taps_per_output() < 0.6 * prototype(1, 2).len() as f64);
    }
}
