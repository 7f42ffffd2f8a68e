//! `--isq-organization`: which linears `--isq` applies to. `default` quantizes every
//! linear of attention and MLP; `moqe` (mixture of quantized experts) only the expert
//! layers of a sparse-MoE model, keeping attention, the router, embeddings and the head
//! at the load dtype. A `--topology` rule still overrides either.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsqOrganization {
    #[default]
    Default,
    /// Only MoE expert weights (`….experts.N.…`).
    Moqe,
}

impl IsqOrganization {
    /// Whether `--isq` (and re-ISQ) applies to weight `name` (Hugging Face naming).
    pub fn covers(self, name: &str) -> bool {
        match self {
            Self::Default => true,
            Self::Moqe => is_expert_weight(name),
        }
    }
}

/// A weight of one MoE expert: `model.layers.3.block_sparse_moe.experts.5.w1`.
pub fn is_expert_weight(name: &str) -> bool {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if p == "experts" {
            return parts.next().is_some_and(|e| e.parse::<usize>().is_ok());
        }
    }
    false
}

impl FromStr for IsqOrganization {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(Self::Default),
            "moqe" => Ok(Self::Moqe),
            _ => bail!("unknown ISQ organization `{s}`; valid: default, moqe"),
        }
    }
}

impl fmt::Display for IsqOrganization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Moqe => "moqe",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moqe_covers_only_experts() {
        let moqe: IsqOrganization = "MoQE".parse().unwrap();
        assert!(moqe.covers("model.layers.0.block_sparse_moe.experts.3.w2"));
        assert!(!moqe.covers("model.layers.0.block_sparse_moe.gate"));
        assert!(!moqe.covers("model.layers.0.self_attn.q_proj"));
        assert!(!moqe.covers("model.layers.0.mlp.down_proj"));
        assert!(!moqe.covers("lm_head"));
        assert!(IsqOrganization::Default.covers("model.layers.0.self_attn.q_proj"));
        assert!("dense".parse::<IsqOrganization>().is_err());
        assert_eq!(moqe.to_string(), "moqe");
    }
}
