//! The conversion kernels, one module per instruction set.
//!
//! Every kernel converts `min(input, output)` samples and never reads or writes outside its
//! slices; the SIMD ones are `unsafe` only because they need their CPU feature, which the
//! [`Kernel`](super::Kernel) dispatcher checks. They are public so that tests and benches can
//! compare each one with [`scalar`]; production code calls the checked functions in
//! [`pcm`](super) instead.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod sse2;

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
pub mod neon;
