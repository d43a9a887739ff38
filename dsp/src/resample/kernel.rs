//! The FIR inner loop: `y[t] += sum_e taps[e] * x[t + e]` for every `t` of `y`.
//!
//! The loop is vectorised over outputs, not over taps: one coefficient is broadcast and multiplied
//! into 8 or 16 consecutive outputs at once, with several independent accumulators so the FMA units
//! never wait on each other. There is no horizontal sum, and every load is a contiguous unaligned load.
//!
//! Every kernel computes each output with the same sequence of rounding steps: start from `y[t]`,
//! then for `e` in order, `acc = fma(taps[e], x[t + e], acc)`. Vector lanes, the narrower remainder
//! blocks and the scalar tail (`f32::mul_add`) therefore agree bit for bit, which is what makes the
//! resampler's output independent of how the input was chunked. The portable fallback for CPUs without
//! FMA ([`Kernel::Portable`]) rounds after the multiply and the add; it is chunking-independent on its
//! own but differs from the FMA kernels in the last bits (the tests bound that difference).

/// Which implementation of the FIR loop to run; picked once per resampler by [`Kernel::detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain Rust with separate multiply and add; LLVM vectorises its 8-wide blocks with the baseline
    /// instruction set.
    Portable,
    /// Scalar fused multiply-add; the reference the SIMD kernels are tested against bit for bit.
    #[cfg_attr(not(test), allow(dead_code))]
    ScalarFma,
    /// AVX2 + FMA, 8 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, 16 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// `y[t] += sum_e taps[e] * x[t + e]` for `t` in `0..y.len()`.
    ///
    /// # Panics
    /// If `x` is shorter than `y.len() + taps.len() - 1` (a bug in the caller, which sizes both).
    #[inline]
    pub(crate) fn run(self, x: &[f32], taps: &[f32], y: &mut [f32]) {
        if y.is_empty() || taps.is_empty() {
            return;
        }
        assert!(
            x.len() + 1 >= y.len() + taps.len(),
            "FIR input too short: {} < {} + {} - 1",
            x.len(),
            y.len(),
            taps.len()
        );
        match self {
            Kernel::Portable => portable(x, taps, y),
            Kernel::ScalarFma => scalar_fma(x, taps, y, 0),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only constructed by `detect` after checking avx2 and fma (or by tests
            // that check the same), and the length precondition was asserted above.
            Kernel::Avx2 => unsafe { x86::avx2(x, taps, y) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is only constructed after checking avx512f and fma; lengths asserted above.
            Kernel::Avx512 => unsafe { x86::avx512(x, taps, y) },
        }
    }
}

/// Scalar fused multiply-add from output `start` on: the tail of the SIMD kernels and the reference.
#[inline(always)]
fn scalar_fma(x: &[f32], taps: &[f32], y: &mut [f32], start: usize) {
    for t in start..y.len() {
        let window = &x[t..t + taps.len()];
        let mut acc = y[t];
        for (c, v) in taps.iter().zip(window) {
            acc = c.mul_add(*v, acc);
        }
        y[t] = acc;
    }
}

/// Portable kernel: 8 outputs per block as a fixed-size array, which LLVM keeps in vector registers.
fn portable(x: &[f32], taps: &[f32], y: &mut [f32]) {
    const W: usize = 8;
    let n = y.len();
    let mut t = 0;
    while t + W <= n {
        let mut acc = [0.0f32; W];
        acc.copy_from_slice(&y[t..t + W]);
        for (e, &c) in taps.iter().enumerate() {
            let v = &x[t + e..t + e + W];
            for lane in 0..W {
                acc[lane] += c * v[lane];
            }
        }
        y[t..t + W].copy_from_slice(&acc);
        t += W;
    }
    for t in t..n {
        let mut acc = y[t];
        for (e, &c) in taps.iter().enumerate() {
            acc += c * x[t + e];
        }
        y[t] = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `N` x 8 outputs from `t` on with AVX2 + FMA: `N` independent accumulators, so up to 8 FMAs are
    /// in flight per coefficient.
    ///
    /// # Safety
    /// avx2 and fma must be available; `y[t .. t + 8N]` and `x[t .. t + 8N + taps.len() - 1]` must be
    /// in bounds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block256<const N: usize>(xp: *const f32, taps: &[f32], yp: *mut f32, t: usize) {
        const W: usize = 8;
        // SAFETY: the caller guarantees every index below is in bounds.
        unsafe {
            let mut acc: [__m256; N] = std::array::from_fn(|i| _mm256_loadu_ps(yp.add(t + i * W)));
            for (e, &c) in taps.iter().enumerate() {
                let cv = _mm256_set1_ps(c);
                let p = xp.add(t + e);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(cv, _mm256_loadu_ps(p.add(i * W)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(yp.add(t + i * W), *a);
            }
        }
    }

    /// `N` x 16 outputs from `t` on with AVX-512.
    ///
    /// # Safety
    /// avx512f and fma must be available; `y[t .. t + 16N]` and `x[t .. t + 16N + taps.len() - 1]`
    /// must be in bounds.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn block512<const N: usize>(xp: *const f32, taps: &[f32], yp: *mut f32, t: usize) {
        const W: usize = 16;
        // SAFETY: the caller guarantees every index below is in bounds.
        unsafe {
            let mut acc: [__m512; N] = std::array::from_fn(|i| _mm512_loadu_ps(yp.add(t + i * W)));
            for (e, &c) in taps.iter().enumerate() {
                let cv = _mm512_set1_ps(c);
                let p = xp.add(t + e);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(cv, _mm512_loadu_ps(p.add(i * W)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(yp.add(t + i * W), *a);
            }
        }
    }

    /// The remaining fewer-than-64 outputs from `t` on with 8-lane blocks; returns the new `t`.
    ///
    /// # Safety
    /// As [`block256`] for the outputs `t .. n` (with `n <= y.len()`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rest256(xp: *const f32, taps: &[f32], yp: *mut f32, t: usize, n: usize) -> usize {
        let blocks = (n - t) / 8;
        // SAFETY: `blocks * 8 <= n - t` outputs from `t`, within the caller's bounds.
        unsafe {
            match blocks {
                0 => {}
                1 => block256::<1>(xp, taps, yp, t),
                2 => block256::<2>(xp, taps, yp, t),
                3 => block256::<3>(xp, taps, yp, t),
                4 => block256::<4>(xp, taps, yp, t),
                5 => block256::<5>(xp, taps, yp, t),
                6 => block256::<6>(xp, taps, yp, t),
                _ => block256::<7>(xp, taps, yp, t),
            }
        }
        t + blocks.min(7) * 8
    }

    /// AVX2 + FMA kernel: 64-output blocks, one narrower block for the rest, then the scalar tail.
    ///
    /// # Safety
    /// The CPU must support avx2 and fma, and `x.len() >= y.len() + taps.len() - 1`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(x: &[f32], taps: &[f32], y: &mut [f32]) {
        let n = y.len();
        let xp = x.as_ptr();
        let yp = y.as_mut_ptr();
        let mut t = 0;
        // SAFETY: outputs stay below `n` by the loop bounds, and inputs below
        // `n + taps.len() - 1 <= x.len()` by the caller's precondition.
        unsafe {
            while t + 64 <= n {
                block256::<8>(xp, taps, yp, t);
                t += 64;
            }
            t = rest256(xp, taps, yp, t, n);
        }
        // `f32::mul_add` compiles to a scalar vfmadd here (fma is enabled): the same rounding as the
        // vector lanes.
        super::scalar_fma(x, taps, y, t);
    }

    /// AVX-512F kernel: 128-output blocks, one narrower 16-lane block, one 8-lane block, scalar tail.
    ///
    /// # Safety
    /// The CPU must support avx512f and fma, and `x.len() >= y.len() + taps.len() - 1`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn avx512(x: &[f32], taps: &[f32], y: &mut [f32]) {
        let n = y.len();
        let xp = x.as_ptr();
        let yp = y.as_mut_ptr();
        let mut t = 0;
        // SAFETY: outputs stay below `n` by the loop bounds and the block counts, and inputs below
        // `n + taps.len() - 1 <= x.len()` by the caller's precondition.
        unsafe {
            while t + 128 <= n {
                block512::<8>(xp, taps, yp, t);
                t += 128;
            }
            let blocks = (n - t) / 16;
            match blocks {
                0 => {}
                1 => block512::<1>(xp, taps, yp, t),
                2 => block512::<2>(xp, taps, yp, t),
                3 => block512::<3>(xp, taps, yp, t),
                4 => block512::<4>(xp, taps, yp, t),
                5 => block512::<5>(xp, taps, yp, t),
                6 => block512::<6>(xp, taps, yp, t),
                _ => block512::<7>(xp, taps, yp, t),
            }
            t += blocks * 16;
            t = rest256(xp, taps, yp, t, n);
        }
        super::scalar_fma(x, taps, y, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable, Kernel::ScalarFma];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    #[test]
    fn every_kernel_matches_the_scalar_reference() {
        let mut rng = StdRng::seed_from_u64(7);
        // Output counts straddle every block width (1, 8, 16, 64, 128) and taps cover 1 (the Nyquist
        // centre tap) up to a long filter.
        for &outputs in &[
            0usize, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 200, 480,
        ] {
            for &ntaps in &[1usize, 2, 5, 33, 66, 129] {
                let x: Vec<f32> = (0..outputs + ntaps)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let taps: Vec<f32> = (0..ntaps).map(|_| rng.random_range(-0.5..0.5)).collect();
                let y0: Vec<f32> = (0..outputs).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut reference = y0.clone();
                Kernel::ScalarFma.run(&x, &taps, &mut reference);
                for kernel in kernels() {
                    let mut y = y0.clone();
                    kernel.run(&x[..outputs + ntaps - 1], &taps, &mut y);
                    if kernel == Kernel::Portable {
                        for (a, b) in y.iter().zip(&reference) {
                            assert!(
                                (a - b).abs() <= 1e-5,
                                "{kernel:?} {outputs}x{ntaps}: {a} vs {b}"
                            );
                        }
                    } else {
                        assert_eq!(
                            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{kernel:?} {outputs}x{ntaps}"
                        );
                    }
                }
            }
        }
    }
}
