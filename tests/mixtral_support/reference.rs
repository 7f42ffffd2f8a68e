//! The independent reference of tests/mixtral.rs: f64 loops over the f32 weights, full
//! causal attention recomputed at every position, every expert evaluated and all but the
//! top-k masked (a different path from the model's gather-by-expert).

use super::*;

fn matvec(w: &[f32], x: &[f64], rows: usize) -> Vec<f64> {
    let cols = x.len();
    assert_eq!(w.len(), rows * cols);
    (0..rows)
        .map(|r| {
            w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b)
                .sum()
        })
        .collect()
}

fn rms(x: &[f64], g: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + EPS).sqrt();
    x.iter().zip(g).map(|(v, &g)| v * s * g as f64).collect()
}

/// Rotate-half RoPE of one head at position `pos`.
fn rope(h: &mut [f64], pos: usize) {
    let half = h.len() / 2;
    for i in 0..half {
        let f = pos as f64 / THETA.powf(2.0 * i as f64 / h.len() as f64);
        let (c, s) = (f.cos(), f.sin());
        let (a, b) = (h[i], h[i + half]);
        h[i] = a * c - b * s;
        h[i + half] = b * c + a * s;
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn reference_moe(w: &Weights, p: &str, x: &[f64]) -> Vec<f64> {
    let logits = matvec(w.get(&format!("{p}.block_sparse_moe.gate")), x, EXPERTS);
    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let probs: Vec<f64> = logits.iter().map(|l| (l - max).exp() / z).collect();
    // Mask: an expert is kept when fewer than top_k others beat it.
    let keep: Vec<bool> = (0..EXPERTS)
        .map(|e| (0..EXPERTS).filter(|&o| probs[o] > probs[e]).count() < TOP_K)
        .collect();
    let kept: f64 = (0..EXPERTS).filter(|&e| keep[e]).map(|e| probs[e]).sum();
    let mut out = vec![0.0; HIDDEN];
    for e in 0..EXPERTS {
        let q = format!("{p}.block_sparse_moe.experts.{e}");
        let g = matvec(w.get(&format!("{q}.w1")), x, INTER);
        let u = matvec(w.get(&format!("{q}.w3")), x, INTER);
        let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| silu(*g) * u).collect();
        let y = matvec(w.get(&format!("{q}.w2")), &a, HIDDEN);
        let weight = if keep[e] { probs[e] / kept } else { 0.0 };
        for (o, v) in out.iter_mut().zip(y) {
            *o += weight * v;
        }
    }
    out
}

/// Logits (f64) of every position of `tokens`, full causal attention recomputed from
/// scratch at each position.
pub fn reference_forward(w: &Weights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let n = tokens.len();
    let emb = w.get("model.embed_tokens");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            emb[t as usize * HIDDEN..(t as usize + 1) * HIDDEN]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let hs: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| rms(x, w.get(&format!("{p}.input_layernorm"))))
            .collect();
        let proj = |name: &str, rows: usize, heads: usize, roped: bool| -> Vec<Vec<f64>> {
            hs.iter()
                .enumerate()
                .map(|(pos, h)| {
                    let mut v = matvec(w.get(&format!("{p}.self_attn.{name}")), h, rows);
                    if roped {
                        for hd in v.chunks_mut(rows / heads) {
                            rope(hd, pos);
                        }
                    }
                    v
                })
                .collect()
        };
        let q = proj("q_proj", HEADS * HEAD_DIM, HEADS, true);
        let k = proj("k_proj", KV_HEADS * HEAD_DIM, KV_HEADS, true);
        let v = proj("v_proj", KV_HEADS * HEAD_DIM, KV_HEADS, false);
        for i in 0..n {
            let mut attn = vec![0.0; HEADS * HEAD_DIM];
            for h in 0..HEADS {
                let g = h * KV_HEADS / HEADS;
                let qh = &q[i][h * HEAD_DIM..(h + 1) * HEAD_DIM];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[j][g * HEAD_DIM..(g + 1) * HEAD_DIM];
                        qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                            / (HEAD_DIM as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (j, s) in scores.iter().enumerate() {
                    let pj = (s - max).exp() / z;
                    for d in 0..HEAD_DIM {
                        attn[h * HEAD_DIM + d] += pj * v[j][g * HEAD_DIM + d];
                    }
                }
            }
            let o = matvec(w.get(&format!("{p}.self_attn.o_proj")), &attn, HIDDEN);
            for (x, o) in xs[i].iter_mut().zip(o) {
                *x += o;
            }
        }
        for x in xs.iter_mut() {
            let h = rms(x, w.get(&format!("{p}.post_attention_layernorm")));
            for (x, m) in x.iter_mut().zip(reference_moe(w, &p, &h)) {
                *x += m;
            }
        }
    }
    xs.iter()
        .map(|x| matvec(w.get("lm_head"), &rms(x, w.get("model.norm")), VOCAB))
        .collect()
}
