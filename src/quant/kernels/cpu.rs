//! Which instruction sets the kernels use: what the CPU reports, detected once, capped by
//! `SMELT_ISA` so that a big CPU can run (and be measured, and tested) as a smaller one:
//!
//! | `SMELT_ISA` | decode kernels | prompt GEMM tile |
//! |---|---|---|
//! | `scalar` | scalar | none (dequantize + f32 GEMM) |
//! | `avx2` | AVX2 + FMA + F16C | AVX2 `maddubs` |
//! | `avxvnni` | AVX2 | 256-bit `vpdpbusd` (AVX-VNNI) |
//! | `avx512` (or unset) | AVX-512 VNNI | 512-bit `vpdpbusd` |
//!
//! Each level needs the CPU to have it; asking for more than the CPU has gives what it has.
//! On aarch64 only `scalar` means anything. The older switches stay: `SMELT_FORCE_SCALAR`
//! is `scalar`, `SMELT_NO_AVX512=1` is `avxvnni`.

use std::sync::OnceLock;

/// Instruction-set levels, in the order of what they add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    Avx2,
    AvxVnni,
    Avx512,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Self::Scalar,
            "avx2" => Self::Avx2,
            "avxvnni" | "avx-vnni" | "avx_vnni" => Self::AvxVnni,
            "avx512" | "avx-512" | "native" | "" => Self::Avx512,
            _ => return None,
        })
    }
}

/// The highest level the environment allows.
pub fn cap() -> Level {
    static CAP: OnceLock<Level> = OnceLock::new();
    *CAP.get_or_init(|| {
        if std::env::var_os("SMELT_FORCE_SCALAR").is_some() {
            return Level::Scalar;
        }
        let mut cap = Level::Avx512;
        if let Ok(v) = std::env::var("SMELT_ISA") {
            match Level::parse(&v) {
                Some(l) => cap = l,
                None => tracing::warn!(
                    "SMELT_ISA={v:?} is not one of scalar, avx2, avxvnni, avx512: ignored"
                ),
            }
        }
        if std::env::var("SMELT_NO_AVX512").is_ok_and(|v| !v.is_empty() && v != "0") {
            cap = cap.min(Level::AvxVnni);
        }
        cap
    })
}

/// What the x86-64 kernels may use: the CPU's features within [`cap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86 {
    /// AVX2 + FMA + F16C: the decode kernels and the AVX2 tile.
    pub avx2: bool,
    /// AVX-VNNI (256-bit `vpdpbusd`, VEX-encoded) on top of AVX2.
    pub avxvnni: bool,
    /// AVX-512 F/BW/VL/VNNI.
    pub avx512: bool,
}

/// [`X86`] for this process, detected once.
#[cfg(target_arch = "x86_64")]
pub fn x86() -> X86 {
    static FEATURES: OnceLock<X86> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        let cap = cap();
        let avx2 = cap >= Level::Avx2
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && cap >= Level::Avx512
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        let avxvnni = avx2 && cap >= Level::AvxVnni && is_x86_feature_detected!("avxvnni");
        let got = X86 {
            avx2,
            avxvnni,
            avx512,
        };
        tracing::debug!("CPU kernels: {got:?} (cap {cap:?})");
        got
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("AVX2"), Some(Level::Avx2));
        assert_eq!(Level::parse(" avx-vnni "), Some(Level::AvxVnni));
        assert_eq!(Level::parse("avx512"), Some(Level::Avx512));
        assert_eq!(Level::parse("scalar"), Some(Level::Scalar));
        assert_eq!(Level::parse("sse9"), None);
        assert!(Level::Scalar < Level::Avx2 && Level::Avx2 < Level::AvxVnni);
        assert!(Level::AvxVnni < Level::Avx512);
    }
}
