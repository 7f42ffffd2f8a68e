//! The types `--isq auto` considers for a weight.

use crate::quant::hqq::{default_axis, HqqAxis};
use crate::quant::IsqType;
use candle_core::quantized::GgmlDType;

/// What a weight is to the model, which limits the types it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// An attention, MLP or router linear, or an untied output head: any type.
    Linear,
    /// The token embedding (alone or tied to the head): rows are looked up one at a time,
    /// which only the ggml block types support.
    Embedding,
}

const GGML: &[GgmlDType] = &[
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q4K,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
    GgmlDType::Q8_0,
];

const METHODS: &[IsqType] = &[
    IsqType::Afq { bits: 2 },
    IsqType::Afq { bits: 3 },
    IsqType::Afq { bits: 4 },
    IsqType::Afq { bits: 6 },
    IsqType::Afq { bits: 8 },
    IsqType::Hqq {
        bits: 4,
        axis: default_axis(4),
    },
    IsqType::Hqq {
        bits: 8,
        axis: default_axis(8),
    },
];

/// The distinct types a (rows, cols) weight of `kind` can be stored as: each candidate
/// after llama.cpp's step-down for its row length, without repeats. A type grouped across
/// rows (HQQ along axis 0) needs whole groups of rows.
pub fn for_weight(kind: WeightKind, rows: usize, cols: usize) -> Vec<IsqType> {
    let methods: &[IsqType] = match kind {
        WeightKind::Linear => METHODS,
        WeightKind::Embedding => &[],
    };
    let mut out: Vec<IsqType> = Vec::new();
    for t in GGML
        .iter()
        .map(|&g| IsqType::Ggml(g))
        .chain(methods.iter().copied())
    {
        let Some(used) = t.resolve_row_len(cols) else {
            continue;
        };
        if let IsqType::Hqq {
            axis: HqqAxis::Strided,
            ..
        } = used
        {
            if !rows.is_multiple_of(crate::quant::hqq::DEFAULT_GROUP) {
                continue;
            }
        }
        if !out.contains(&used) {
            out.push(used);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_row_length() {
        let q = |s: &str| s.parse::<IsqType>().unwrap();
        let wide = for_weight(WeightKind::Linear, 576, 1536);
        assert!(wide.contains(&q("Q2K")) && wide.contains(&q("HQQ4")) && wide.contains(&q("AFQ3")));
        // 576 columns do not divide 256: the K types step down and collapse into others.
        let narrow = for_weight(WeightKind::Linear, 1536, 576);
        assert!(!narrow.contains(&q("Q4K")) && narrow.contains(&q("Q5_0")));
        let mut dedup = narrow.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), narrow.len());
        // Embeddings take only the block types.
        let emb = for_weight(WeightKind::Embedding, 49152, 576);
        assert!(emb.iter().all(|t| matches!(t, IsqType::Ggml(_))));
        // HQQ8 groups along rows: 100 rows are not whole groups.
        assert!(!for_weight(WeightKind::Linear, 100, 576).contains(&q("HQQ8")));
    }
}
