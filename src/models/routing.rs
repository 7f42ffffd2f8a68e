//! How an MoE router turns one token's logits into (expert, weight) pairs, for every
//! router kind the families use. Ties go to the lower expert index.

/// A router kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Router {
    /// Softmax over all experts, the `top_k` most probable, renormalised to sum to one
    /// when `renormalize` (Mixtral always; Qwen3-MoE's `norm_topk_prob`).
    SoftmaxTopK { renormalize: bool },
    /// DeepSeek V2: softmax scores; with `group_limited` (`group_limited_greedy`) only
    /// experts of the `topk_groups` groups with the highest best score compete; the
    /// `top_k` scores are the weights as they are (no renormalisation).
    DeepSeekV2 {
        groups: usize,
        topk_groups: usize,
        group_limited: bool,
    },
    /// DeepSeek V3 (`noaux_tc`): sigmoid scores; experts are chosen by score plus
    /// `e_score_correction_bias` among the `topk_groups` groups whose two best biased
    /// scores sum highest; the weights are the unbiased scores, renormalised when
    /// `renormalize` (`norm_topk_prob`).
    DeepSeekV3 {
        groups: usize,
        topk_groups: usize,
        renormalize: bool,
    },
    /// Phi-3.5-MoE's sparsemixer at inference, top-2: the best expert, weighted by its
    /// softmax among the experts within `2 · jitter_eps` (relative) of it; then the best
    /// of the rest, weighted by its softmax among those within the same margin of it.
    SparseMixer { jitter_eps: f32 },
}

/// The `k` largest of `v` (index order on ties), largest first.
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    // A stable sort keeps equal values in index order.
    order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    order.truncate(k);
    order
}

/// Experts outside the `keep` best groups (by `group_score`) set to `fill`.
fn mask_groups(
    scores: &[f32],
    groups: usize,
    keep: usize,
    group_score: impl Fn(&[f32]) -> f32,
    fill: f32,
) -> Vec<f32> {
    let per = scores.len() / groups.max(1);
    let g: Vec<f32> = scores.chunks(per).map(&group_score).collect();
    let kept = top_k(&g, keep);
    scores
        .iter()
        .enumerate()
        .map(|(e, &s)| if kept.contains(&(e / per)) { s } else { fill })
        .collect()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / total).collect()
}

/// One sparsemixer pick among `scores` (−∞ for excluded experts): the best, and its
/// softmax weight among the experts close enough to it.
fn sparsemixer_pick(scores: &[f32], all: &[f32], eps: f32) -> (usize, f32) {
    let best = top_k(scores, 1)[0];
    let max = scores[best];
    // transformers: ((max − s) / max(|s|, max)) > 2·eps masks s, with |s| from the raw scores.
    let kept: Vec<f32> = scores
        .iter()
        .zip(all)
        .map(|(&s, &raw)| {
            let factor = raw.abs().max(max);
            if (max - s) / factor > 2.0 * eps {
                f32::NEG_INFINITY
            } else {
                s
            }
        })
        .collect();
    (best, softmax(&kept)[best])
}

/// The routing of one token: (expert, weight) pairs, most probable first. `bias` is
/// DeepSeek V3's `e_score_correction_bias`; `scale` its `routed_scaling_factor`.
pub fn route(
    logits: &[f32],
    router: Router,
    k: usize,
    bias: Option<&[f32]>,
    scale: f32,
) -> Vec<(usize, f32)> {
    match router {
        Router::SparseMixer { jitter_eps } => {
            let (first, w1) = sparsemixer_pick(logits, logits, jitter_eps);
            let mut rest = logits.to_vec();
            rest[first] = f32::NEG_INFINITY;
            let (second, w2) = sparsemixer_pick(&rest, logits, jitter_eps);
            vec![(first, w1 * scale), (second, w2 * scale)]
        }
        Router::SoftmaxTopK { renormalize } => {
            let p = softmax(logits);
            let chosen = top_k(&p, k);
            let kept: f32 = if renormalize {
                chosen.iter().map(|&e| p[e]).sum()
            } else {
                1.0
            };
            chosen
                .into_iter()
                .map(|e| (e, p[e] / kept * scale))
                .collect()
        }
        Router::DeepSeekV2 {
            groups,
            topk_groups,
            group_limited,
        } => {
            let p = softmax(logits);
            let choice = if group_limited {
                let max = |g: &[f32]| g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                mask_groups(&p, groups, topk_groups, max, 0.0)
            } else {
                p.clone()
            };
            top_k(&choice, k)
                .into_iter()
                .map(|e| (e, choice[e] * scale))
                .collect()
        }
        Router::DeepSeekV3 {
            groups,
            topk_groups,
            renormalize,
        } => {
            let s: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
            let biased: Vec<f32> = match bias {
                Some(b) => s.iter().zip(b).map(|(x, y)| x + y).collect(),
                None => s.clone(),
            };
            let two_best = |g: &[f32]| top_k(g, 2).iter().map(|&i| g[i]).sum::<f32>();
            let choice = mask_groups(&biased, groups, topk_groups, two_best, f32::NEG_INFINITY);
            let chosen = top_k(&choice, k);
            let sum: f32 = if renormalize {
                chosen.iter().map(|&e| s[e]).sum::<f32>() + 1e-20
            } else {
                1.0
            };
            chosen
                .into_iter()
                .map(|e| (e, s[e] / sum * scale))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax_route(logits: &[f32], k: usize, renormalize: bool) -> Vec<(usize, f32)> {
        route(logits, Router::SoftmaxTopK { renormalize }, k, None, 1.0)
    }

    #[test]
    fn routes_to_top_k_renormalised() {
        let r = softmax_route(&[0.0, 0.0], 1, false);
        assert!((r[0].1 - 0.5).abs() < 1e-6);
        let r = softmax_route(&[0.0, 2.0, 1.0, 2.0], 2, true);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((r[0].1 - 0.5).abs() < 1e-6 && (r[1].1 - 0.5).abs() < 1e-6);
        let r = softmax_route(&[1.0, 0.0, 3.0], 2, true);
        let (a, b) = (3f32.exp(), 1f32.exp());
        assert_eq!(r[0].0, 2);
        assert!((r[0].1 - a / (a + b)).abs() < 1e-6);
        assert!((r.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(softmax_route(&[5.0, 1.0], 1, true), vec![(0, 1.0)]);
    }

    #[test]
    fn sparsemixer_weights_each_pick_among_its_close_rivals() {
        // Expert 2 is best; 0 is within the margin of it, 1 and 3 are not. Then expert 0
        // is best of the rest, alone within its margin.
        let r = route(
            &[1.0, -2.0, 1.01, 0.2],
            Router::SparseMixer { jitter_eps: 0.01 },
            2,
            None,
            1.0,
        );
        assert_eq!((r[0].0, r[1].0), (2, 0));
        let e = (1.0f32 - 1.01).exp();
        assert!((r[0].1 - 1.0 / (1.0 + e)).abs() < 1e-6, "{r:?}");
        assert!((r[1].1 - 1.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn group_limits_keep_only_the_best_groups() {
        // Groups {0,1} and {2,3}: V2 ranks groups by their best score, V3 by the sum of
        // their two best; expert 3 alone is best, but group {0,1} sums higher.
        let logits = [1.0, 1.0, -3.0, 1.5];
        let v2 = Router::DeepSeekV2 {
            groups: 2,
            topk_groups: 1,
            group_limited: true,
        };
        let picked: Vec<usize> = route(&logits, v2, 2, None, 1.0)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(picked, vec![3, 2]);
        let v3 = Router::DeepSeekV3 {
            groups: 2,
            topk_groups: 1,
            renormalize: true,
        };
        let r = route(&logits, v3, 2, None, 2.5);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!((r.iter().map(|p| p.1).sum::<f32>() - 2.5).abs() < 1e-5);
        // The bias changes the choice, not the weights' source.
        let r = route(&logits, v3, 1, Some(&[0.0, 0.0, 0.0, 5.0]), 1.0);
        assert_eq!(r[0].0, 3);
        assert!((r[0].1 - 1.0).abs() < 1e-5);
    }
}
