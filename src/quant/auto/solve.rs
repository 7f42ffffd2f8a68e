//! Choosing one option per weight: least total predicted loss with total bytes within a
//! budget (a multiple-choice knapsack).
//!
//! The Lagrangian way: on each weight's lower convex hull of (bytes, loss), every step up
//! trades bytes for loss at some rate; taking steps in order of that rate, across all
//! weights, while they fit, gives the optimum of the relaxed problem, off the true
//! optimum by at most one weight's step. Then any slack left is spent on whichever
//! single change (hull or not) lowers the loss most, until none fits.

use anyhow::{bail, Result};

/// One way to store a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub bytes: u64,
    pub loss: f64,
}

/// The chosen option index per unit, or an error naming the smallest possible total when
/// even the smallest options (plus `fixed` bytes) exceed `budget`.
pub fn solve(units: &[Vec<Choice>], fixed: u64, budget: u64) -> Result<Vec<usize>> {
    if units.iter().any(Vec::is_empty) {
        bail!("a weight has no storage option");
    }
    let hulls: Vec<Vec<usize>> = units.iter().map(|u| lower_hull(u)).collect();
    let smallest: u64 = fixed
        + hulls
            .iter()
            .zip(units)
            .map(|(h, u)| u[h[0]].bytes)
            .sum::<u64>();
    if smallest > budget {
        bail!(
            "--max-memory {} is below the smallest possible mix, {} (every weight at its smallest type)",
            super::format_size(budget),
            super::format_size(smallest)
        );
    }
    let mut left = budget - smallest;
    let mut pos = vec![0usize; units.len()]; // position on each hull
                                             // Every hull step, most loss saved per byte first.
    let mut steps: Vec<(f64, usize, usize)> = Vec::new();
    for (u, h) in hulls.iter().enumerate() {
        for s in 1..h.len() {
            let (a, b) = (units[u][h[s - 1]], units[u][h[s]]);
            let rate = (a.loss - b.loss) / (b.bytes - a.bytes) as f64;
            steps.push((rate, u, s));
        }
    }
    steps.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut blocked = vec![false; units.len()];
    for &(_, u, s) in &steps {
        if blocked[u] || pos[u] + 1 != s {
            continue;
        }
        let cost = units[u][hulls[u][s]].bytes - units[u][hulls[u][s - 1]].bytes;
        if cost <= left {
            left -= cost;
            pos[u] = s;
        } else {
            // Later steps of this weight build on this one.
            blocked[u] = true;
        }
    }
    let mut chosen: Vec<usize> = pos.iter().zip(&hulls).map(|(&p, h)| h[p]).collect();
    // Spend what is left on the single best change, until nothing fits.
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (u, opts) in units.iter().enumerate() {
            let cur = opts[chosen[u]];
            for (i, o) in opts.iter().enumerate() {
                let fits = o.bytes <= cur.bytes + left;
                let gain = cur.loss - o.loss;
                if fits && gain > 0.0 && best.is_none_or(|b| gain > b.0) {
                    best = Some((gain, u, i));
                }
            }
        }
        let Some((_, u, i)) = best else { break };
        left = left + units[u][chosen[u]].bytes - units[u][i].bytes;
        chosen[u] = i;
    }
    Ok(chosen)
}

/// Indices of the options on the lower convex hull of (bytes, loss), by increasing bytes:
/// each one strictly cheaper in loss than the last, at a falling rate per byte.
fn lower_hull(opts: &[Choice]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..opts.len()).collect();
    order.sort_by(|&a, &b| {
        opts[a]
            .bytes
            .cmp(&opts[b].bytes)
            .then(opts[a].loss.total_cmp(&opts[b].loss))
    });
    let mut hull: Vec<usize> = Vec::new();
    for i in order {
        let p = opts[i];
        if let Some(&last) = hull.last() {
            // Same size or no better: never worth it.
            if opts[last].bytes == p.bytes || p.loss >= opts[last].loss {
                continue;
            }
        }
        // Drop points above the segment from their predecessor to this one.
        while hull.len() >= 2 {
            let (a, b) = (opts[hull[hull.len() - 2]], opts[hull[hull.len() - 1]]);
            let rate_ab = (a.loss - b.loss) / (b.bytes - a.bytes) as f64;
            let rate_ap = (a.loss - p.loss) / (p.bytes - a.bytes) as f64;
            if rate_ap >= rate_ab {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: u64, loss: f64) -> Choice {
        Choice { bytes, loss }
    }

    fn total(units: &[Vec<Choice>], pick: &[usize]) -> (u64, f64) {
        pick.iter().enumerate().fold((0, 0.0), |(b, l), (u, &i)| {
            (b + units[u][i].bytes, l + units[u][i].loss)
        })
    }

    /// The exact optimum by trying every combination.
    fn brute(units: &[Vec<Choice>], budget: u64) -> f64 {
        let mut best = f64::INFINITY;
        let mut pick = vec![0usize; units.len()];
        loop {
            let (b, l) = total(units, &pick);
            if b <= budget {
                best = best.min(l);
            }
            let mut k = 0;
            loop {
                if k == units.len() {
                    return best;
                }
                pick[k] += 1;
                if pick[k] < units[k].len() {
                    break;
                }
                pick[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let opts = [
            c(10, 5.0),
            c(20, 2.0),
            c(30, 1.5),
            c(25, 3.0),
            c(40, 0.0),
            c(20, 2.5),
        ];
        // (30, 1.5) lies above the segment from (20, 2) to (40, 0).
        assert_eq!(lower_hull(&opts), vec![0, 1, 4]);
    }

    #[test]
    fn too_small_a_budget_names_the_smallest_mix() {
        let units = vec![vec![c(100, 1.0), c(200, 0.0)], vec![c(50, 1.0)]];
        let err = solve(&units, 10, 159).unwrap_err().to_string();
        assert!(err.contains("160 bytes"), "{err}");
        assert_eq!(solve(&units, 10, 160).unwrap(), vec![0, 0]);
    }

    #[test]
    fn near_optimal_on_random_instances() {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = 2 + (rnd() % 4) as usize;
            let units: Vec<Vec<Choice>> = (0..n)
                .map(|_| {
                    (0..1 + rnd() % 5)
                        .map(|_| c(1 + rnd() % 100, (rnd() % 1000) as f64 / 10.0))
                        .collect()
                })
                .collect();
            let min: u64 = units
                .iter()
                .map(|u| u.iter().map(|o| o.bytes).min().unwrap())
                .sum();
            let budget = min + rnd() % 200;
            let pick = solve(&units, 0, budget).unwrap();
            let (bytes, loss) = total(&units, &pick);
            assert!(bytes <= budget);
            let opt = brute(&units, budget);
            // Off the optimum by at most one weight's largest step.
            let step = units
                .iter()
                .map(|u| {
                    let l = u.iter().map(|o| o.loss);
                    l.clone().fold(f64::MIN, f64::max) - l.fold(f64::MAX, f64::min)
                })
                .fold(0.0, f64::max);
            assert!(loss <= opt + step + 1e-9, "{loss} vs {opt}");
        }
    }

    #[test]
    fn exact_when_the_steps_fit_the_budget() {
        // Two weights with convex options: the best 30 bytes go to the steepest steps.
        let units = vec![
            vec![c(10, 10.0), c(20, 4.0), c(30, 2.0)],
            vec![c(10, 10.0), c(20, 7.0), c(30, 5.0)],
        ];
        let pick = solve(&units, 0, 50).unwrap();
        assert_eq!(total(&units, &pick), (50, 9.0));
        assert_eq!(brute(&units, 50), 9.0);
    }
}
