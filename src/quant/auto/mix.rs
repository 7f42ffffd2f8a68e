//! The measured weights, the chosen mix, its report and its topology file.

use super::format_size;
use super::measure::{Error, WeightErrors};
use super::solve::{solve, Choice};
use crate::quant::{IsqType, Topology};
use anyhow::Result;
use std::collections::BTreeMap;

/// A weight's role, which says which of its errors counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Rows are looked up (a token embedding).
    Lookup,
    /// Rows are dotted with an activation (a linear, the head).
    Product,
}

/// The loss the mix minimises, per weight: the expected squared error it adds to its
/// output per token (what a second-order expansion of the model's loss is proportional
/// to when every output is equally sensitive), summed over the roles a weight plays (a
/// tied embedding is looked up and is the head); a value projection's rows count through
/// the output projection's columns that read them (`source.rs`). Measured on the test
/// model, perplexity rises by about the same amount per unit of this error whichever
/// linear or head it is in (within 2×), where errors relative to each output's own norm
/// are off by 100× between the head and the layers (docs/QUANTIZATION.md).
pub fn loss(roles: &[Role], err: Error) -> f64 {
    roles
        .iter()
        .map(|r| match r {
            Role::Lookup => err.per_row,
            Role::Product => err.per_token,
        })
        .sum()
}

/// One weight (or a tied embedding and head) and its options.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The names topology rules give it: one, or the embedding's and the head's.
    pub names: Vec<String>,
    pub options: Vec<(Option<IsqType>, u64, f64)>,
}

impl Unit {
    pub fn new(names: Vec<String>, roles: &[Role], errors: &WeightErrors) -> Self {
        let opts: Vec<String> = errors
            .options
            .iter()
            .map(|m| {
                format!(
                    "{}={}:{:.3e}:{:.3e}",
                    type_name(m.ty),
                    m.bytes,
                    m.error.per_row,
                    m.error.per_token
                )
            })
            .collect();
        tracing::debug!(
            "measured {} (signal {:.3e} {:.3e}): {}",
            names.join("+"),
            errors.signal.per_row,
            errors.signal.per_token,
            opts.join(" ")
        );
        let options = errors
            .options
            .iter()
            .map(|m| (m.ty, m.bytes, loss(roles, m.error)))
            .collect();
        Self { names, options }
    }
}

/// The chosen type of every measured weight.
#[derive(Debug, Clone)]
pub struct Mix {
    pub units: Vec<Unit>,
    pub chosen: Vec<usize>,
    /// Bytes of what is not chosen here (norms, biases, weights the organization keeps).
    pub fixed_bytes: u64,
    pub budget: u64,
}

impl Mix {
    /// The least-loss mix within `budget` bytes, `fixed` of them already spent.
    pub fn choose(units: Vec<Unit>, fixed: u64, budget: u64) -> Result<Self> {
        let choices: Vec<Vec<Choice>> = units
            .iter()
            .map(|u| {
                u.options
                    .iter()
                    .map(|&(_, bytes, loss)| Choice { bytes, loss })
                    .collect()
            })
            .collect();
        let chosen = solve(&choices, fixed, budget)?;
        Ok(Self {
            units,
            chosen,
            fixed_bytes: fixed,
            budget,
        })
    }

    fn picks(&self) -> impl Iterator<Item = (&Unit, (Option<IsqType>, u64, f64))> {
        self.units
            .iter()
            .zip(&self.chosen)
            .map(|(u, &i)| (u, u.options[i]))
    }

    pub fn total_bytes(&self) -> u64 {
        self.fixed_bytes + self.picks().map(|(_, o)| o.1).sum::<u64>()
    }

    pub fn predicted_loss(&self) -> f64 {
        self.picks().map(|(_, o)| o.2).sum()
    }

    /// Weights per type, largest count first.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for (_, (ty, _, _)) in self.picks() {
            *by.entry(type_name(ty)).or_default() += 1;
        }
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// One line: counts per type, total bytes against the budget, predicted loss.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(t, n)| format!("{n}×{t}"))
            .collect();
        format!(
            "{} weights: {}; {} of {}; predicted loss {:.6}",
            self.units.len(),
            counts.join(", "),
            format_size(self.total_bytes()),
            format_size(self.budget),
            self.predicted_loss()
        )
    }

    /// The mix as a topology file: one exact-name rule per weight.
    pub fn topology_yaml(&self) -> String {
        let mut out = format!(
            "# written by smelt --isq auto --max-memory {}\n# {}\n",
            self.budget,
            self.summary()
        );
        for (u, (ty, _, _)) in self.picks() {
            for name in &u.names {
                out.push_str(&format!("{name}:\n  isq: {}\n", type_name(ty)));
            }
        }
        out
    }

    pub fn topology(&self) -> Result<Topology> {
        Topology::parse(&self.topology_yaml())
    }
}

fn type_name(ty: Option<IsqType>) -> String {
    ty.map_or_else(|| "none".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::auto::measure::Measured;

    #[test]
    fn topology_round_trips_the_mix() {
        let q = |s: &str| Some(s.parse::<IsqType>().unwrap());
        let errs = |a: f64, b: f64| {
            WeightErrors::from_totals(
                vec![
                    Measured {
                        ty: q("Q4K"),
                        bytes: 100,
                        error: Error {
                            per_row: a,
                            per_token: a,
                        },
                    },
                    Measured {
                        ty: q("Q8_0"),
                        bytes: 200,
                        error: Error {
                            per_row: b,
                            per_token: b,
                        },
                    },
                    Measured {
                        ty: None,
                        bytes: 400,
                        error: Error::default(),
                    },
                ],
                Error {
                    per_row: 1.0,
                    per_token: 1.0,
                },
            )
        };
        let units = vec![
            Unit::new(
                vec!["model.layers.0.mlp.down_proj".into()],
                &[Role::Product],
                &errs(1.0, 0.1),
            ),
            Unit::new(
                vec!["model.embed_tokens".into(), "lm_head".into()],
                &[Role::Lookup, Role::Product],
                &errs(0.2, 0.1),
            ),
        ];
        // 10 fixed + 300: the down projection gains most from Q8_0.
        let mix = Mix::choose(units, 10, 310).unwrap();
        assert_eq!(mix.total_bytes(), 310);
        assert!(
            (mix.predicted_loss() - (0.1 + 0.4)).abs() < 1e-12,
            "{}",
            mix.predicted_loss()
        );
        let t = mix.topology().unwrap();
        assert_eq!(t.isq_for("model.layers.0.mlp.down_proj", None), q("Q8_0"));
        assert_eq!(t.isq_for("model.embed_tokens", None), q("Q4K"));
        assert_eq!(t.isq_for("lm_head", None), q("Q4K"));
        assert_eq!(
            t.isq_for("model.layers.1.mlp.down_proj", q("Q2K")),
            q("Q2K")
        );
        assert!(mix.summary().contains("1×Q4K") && mix.summary().contains("1×Q8_0"));
        // A budget for everything dense keeps every weight as loaded.
        let all = Mix::choose(mix.units.clone(), 0, 10_000).unwrap();
        assert!(all.topology_yaml().contains("isq: none"));
        assert_eq!(all.predicted_loss(), 0.0);
    }
}
