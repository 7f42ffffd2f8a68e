//! `--topology FILE`: per-layer (and per-weight) ISQ choices, overriding `--isq`.
//!
//! ```yaml
//! 0-8:            # layers 0..8 (end exclusive)
//!   isq: Q3K
//! 8-16:
//!   isq: Q6K
//! 29:             # one layer
//!   isq: none     # keep it unquantized
//! '/mlp\.down_proj$/':   # a regex on full weight names
//!   isq: Q8_0
//! model.layers.3.self_attn.v_proj:   # one weight by its full name, the most specific
//!   isq: Q6K
//! ```
//! Layer ranges may not overlap or reach past the model; a name rule wins over a regex,
//! a regex over a range; layers no rule covers take `--isq`. The output head and the
//! token embedding are quantized only when a rule names them (`lm_head: {isq: Q8_0}`,
//! `model.embed_tokens: {isq: Q6K}`; the embedding takes ggml block types only); when the
//! head is tied to the embedding and both get one type, they share its storage.
//! `--isq auto --write-topology` writes name rules. `device` is accepted for `cpu` only
//! in this build.

use super::IsqType;
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;

/// What a rule asks for: a type, or explicitly no quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Quantize(IsqType),
    Keep,
}

#[derive(Debug, Clone)]
struct RangeRule {
    start: usize,
    end: usize,
    choice: Option<Choice>,
}

#[derive(Debug, Clone, Default)]
pub struct Topology {
    ranges: Vec<RangeRule>,
    patterns: Vec<(Regex, Option<Choice>)>,
    names: HashMap<String, Option<Choice>>,
}

fn parse_choice(key: &str, v: &serde_yaml::Value) -> Result<Option<Choice>> {
    let map = v.as_mapping().with_context(|| {
        format!("topology entry `{key}` must be a mapping with `isq` and/or `device`")
    })?;
    for (k, val) in map {
        match k.as_str() {
            Some("isq") => {}
            Some("device") => {
                let d = val.as_str().unwrap_or_default();
                if d != "cpu" {
                    bail!("topology entry `{key}`: device `{d}` is not available in this build (only cpu)");
                }
            }
            other => {
                bail!("topology entry `{key}`: unknown field {other:?} (expected isq, device)")
            }
        }
    }
    match map.get("isq") {
        None => Ok(None),
        Some(serde_yaml::Value::String(s)) if s.eq_ignore_ascii_case("none") => {
            Ok(Some(Choice::Keep))
        }
        Some(serde_yaml::Value::Null) => Ok(Some(Choice::Keep)),
        Some(val) => {
            let s = match val {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => bail!("topology entry `{key}`: isq must be a type name, a bit width or none"),
            };
            let ty: IsqType = s
                .parse()
                .with_context(|| format!("topology entry `{key}`"))?;
            Ok(Some(Choice::Quantize(ty)))
        }
    }
}

impl Topology {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read topology file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("topology file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).context("not valid YAML")?;
        let map = match doc {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => return Ok(Self::default()),
            _ => bail!("the top level must be a mapping of layer ranges or /regex/ to settings"),
        };
        let mut topo = Self::default();
        for (k, v) in &map {
            let key = match k {
                serde_yaml::Value::String(s) => s.trim().to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => bail!("keys must be `START-END`, `N` or `/regex/`"),
            };
            let choice = parse_choice(&key, v)?;
            if let Some(pattern) = key.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                let re = Regex::new(pattern).with_context(|| format!("bad regex in `{key}`"))?;
                topo.patterns.push((re, choice));
                continue;
            }
            if is_weight_name(&key) {
                topo.names.insert(key, choice);
                continue;
            }
            let (start, end) = match key.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<usize>().ok(),
                    b.trim().parse::<usize>().ok(),
                ),
                None => (key.parse().ok(), key.parse::<usize>().ok().map(|n| n + 1)),
            };
            let (Some(start), Some(end)) = (start, end) else {
                bail!("key `{key}` is not `START-END`, `N`, `/regex/` or a full weight name (`model.layers.0.mlp.up_proj`)");
            };
            if end <= start {
                bail!("range `{key}` is empty (the end is exclusive)");
            }
            if let Some(o) = topo.ranges.iter().find(|r| start < r.end && r.start < end) {
                bail!("range `{key}` overlaps {}-{}", o.start, o.end);
            }
            topo.ranges.push(RangeRule { start, end, choice });
        }
        Ok(topo)
    }

    /// Checks the ranges against the model's depth.
    pub fn validate(&self, num_layers: usize) -> Result<()> {
        if let Some(r) = self.ranges.iter().find(|r| r.end > num_layers) {
            bail!(
                "topology range {}-{} reaches past the model's {num_layers} layers",
                r.start,
                r.end
            );
        }
        Ok(())
    }

    /// The ISQ type for weight `name` (Hugging Face naming), given the `--isq` default.
    pub fn isq_for(&self, name: &str, default: Option<IsqType>) -> Option<IsqType> {
        let resolve = |c: Option<Choice>| match c {
            Some(Choice::Quantize(t)) => Some(Some(t)),
            Some(Choice::Keep) => Some(None),
            None => None,
        };
        // A name rule, then the last matching regex rule, then the layer's range, then
        // the default.
        if let Some(t) = self.names.get(name).and_then(|c| resolve(*c)) {
            return t;
        }
        if let Some(r) = self.patterns.iter().rev().find(|(re, _)| re.is_match(name)) {
            if let Some(t) = resolve(r.1) {
                return t;
            }
        }
        if let Some(layer) = layer_index(name) {
            if let Some(r) = self
                .ranges
                .iter()
                .find(|r| (r.start..r.end).contains(&layer))
            {
                if let Some(t) = resolve(r.choice) {
                    return t;
                }
            }
        }
        default
    }
}

/// A full weight name (`model.layers.0.mlp.up_proj`, `lm_head`), not a range.
fn is_weight_name(key: &str) -> bool {
    let starts_alpha = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    starts_alpha && (key.contains('.') || key == "lm_head")
}

/// N in `model.layers.N.…`.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ranges_regexes_and_default() {
        let t = Topology::parse(
            "0-2:\n  isq: Q8_0\n'3':\n  isq: none\n'/down_proj$/':\n  isq: q4_k\n5-7:\n  device: cpu\n\
             model.layers.1.mlp.down_proj:\n  isq: Q6K\nlm_head:\n  isq: Q5_0\n",
        )
        .unwrap();
        let q = |s: &str| Some(s.parse::<IsqType>().unwrap());
        let d = q("Q4_0");
        assert_eq!(t.isq_for("model.layers.1.self_attn.q_proj", d), q("Q8_0"));
        assert_eq!(t.isq_for("model.layers.3.self_attn.q_proj", d), None);
        assert_eq!(t.isq_for("model.layers.3.mlp.down_proj", d), q("Q4K"));
        assert_eq!(t.isq_for("model.layers.4.mlp.up_proj", d), d);
        // A name rule wins over the regex and the range.
        assert_eq!(t.isq_for("model.layers.1.mlp.down_proj", d), q("Q6K"));
        assert_eq!(t.isq_for("model.layers.2.mlp.down_proj", d), q("Q4K"));
        assert_eq!(t.isq_for("lm_head", None), q("Q5_0"));
        assert_eq!(
            t.isq_for("model.layers.6.mlp.up_proj", d),
            d,
            "device-only rule keeps --isq"
        );
        assert!(t.validate(7).is_ok());
        assert!(t
            .validate(6)
            .unwrap_err()
            .to_string()
            .contains("past the model"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, needle) in [
            ("0-4:\n  isq: Q4K\n2-6:\n  isq: Q8_0\n", "overlaps"),
            ("0-4:\n  isq: Q7\n", "unknown ISQ type"),
            ("4-2:\n  isq: Q4K\n", "empty"),
            ("abc:\n  isq: Q4K\n", "not `START-END`"),
            ("'/(/':\n  isq: Q4K\n", "bad regex"),
            ("0-4:\n  device: cuda\n", "not available"),
            ("0-4:\n  isk: Q4K\n", "unknown field"),
            ("- 1\n- 2\n", "top level"),
        ] {
            let err = format!("{:#}", Topology::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
