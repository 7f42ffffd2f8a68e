//! `--isq auto --max-memory SIZE`: per-weight ISQ types chosen by measurement under a
//! byte budget.
//!
//! Loading runs twice over the streamed weights (`loaders/auto.rs`). The first pass wraps
//! the weight source in [`source::MeasuringSource`]: each weight is read, a sample of its
//! rows is quantized to every candidate type ([`candidates`]) and the importance-weighted
//! error of each is recorded ([`measure`]); the weight is then dropped and the model gets
//! a placeholder, so full precision never sits in memory whole. [`solve`] then picks one
//! type per weight minimising the predicted loss with every weight's bytes (embedding and
//! head included) within the budget, and the mix becomes a [`Topology`](super::Topology)
//! ([`mix`]) the second pass quantizes with, which `--write-topology` saves.

pub mod candidates;
pub mod measure;
pub mod mix;
pub mod solve;
pub mod source;

use anyhow::{bail, Context, Result};

/// What `--isq auto` was given.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoIsq {
    /// Total bytes of every weight tensor (linears, embedding, head, norms).
    pub max_bytes: u64,
    /// Where to save the chosen mix as a topology file.
    pub write_topology: Option<std::path::PathBuf>,
}

/// What `--isq` (with `--max-memory`) asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum IsqChoice {
    /// One type for every linear.
    Uniform(super::IsqType),
    /// `auto`: per-weight types chosen by measurement within this many bytes.
    Auto { max_bytes: u64 },
}

impl IsqChoice {
    /// `isq` is a type name, a bit width or `auto`; `max_memory` a size, which only
    /// `auto` takes and `auto` needs. The CLI and the Python package share these rules.
    pub fn parse(isq: Option<&str>, max_memory: Option<&str>) -> Result<Option<Self>> {
        let auto = isq.is_some_and(|s| s.trim().eq_ignore_ascii_case("auto"));
        match (isq, max_memory) {
            (None, None) => Ok(None),
            (_, Some(_)) if !auto => bail!(
                "--max-memory is the budget of --isq auto; with another --isq (or none) it has no effect, so give --isq auto or drop --max-memory"
            ),
            (_, Some(m)) => Ok(Some(Self::Auto {
                max_bytes: parse_size(m).context("--max-memory")?,
            })),
            (Some(_), None) if auto => bail!(
                "--isq auto needs a budget: --max-memory SIZE (300MiB, 4GB, …) for the weights"
            ),
            (Some(t), None) => Ok(Some(Self::Uniform(t.parse()?))),
        }
    }
}

/// Parses a size: `300MiB`, `4GB`, `1.5G`, `123456` (bytes). K/M/G/T and KB/MB/GB/TB are
/// powers of 1000, KiB/MiB/GiB/TiB powers of 1024.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a size such as 300MiB, 4GB or 123456"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => bail!("unknown size unit `{other}` in `{s}` (use B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        bail!("the size `{s}` must be at least one byte");
    }
    Ok(bytes as u64)
}

/// Bytes in a readable unit, for reports and errors.
pub fn format_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB ({bytes} bytes)", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.2} MiB ({bytes} bytes)", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isq_and_budget_go_together() {
        assert_eq!(IsqChoice::parse(None, None).unwrap(), None);
        assert_eq!(
            IsqChoice::parse(Some("q4k"), None).unwrap(),
            Some(IsqChoice::Uniform(crate::quant::IsqType::Q4K))
        );
        assert_eq!(
            IsqChoice::parse(Some("AUTO"), Some("1KiB")).unwrap(),
            Some(IsqChoice::Auto { max_bytes: 1024 })
        );
        let err = |i, m| format!("{:#}", IsqChoice::parse(i, m).unwrap_err());
        assert!(err(Some("auto"), None).contains("--max-memory SIZE"));
        assert!(err(Some("Q4K"), Some("1GB")).contains("--isq auto"));
        assert!(err(None, Some("1GB")).contains("--isq auto"));
        assert!(err(Some("auto"), Some("lots")).contains("--max-memory"));
        assert!(err(Some("Q7"), None).contains("unknown ISQ type"));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("300MiB").unwrap(), 300 * 1024 * 1024);
        assert_eq!(parse_size("4GB").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size(" 123456 ").unwrap(), 123456);
        assert_eq!(parse_size("2 kib").unwrap(), 2048);
        for bad in ["", "MiB", "3 parsecs", "0", "1.2.3GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
