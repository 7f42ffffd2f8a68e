//! Serving counters kept by the scheduler and rendered in Prometheus' text format.
//! Plain atomics: the engine thread writes, any front reads, nobody waits.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the time-to-first-token histogram buckets.
const TTFT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_received: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_cancelled: AtomicU64,
    pub finished_error: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub preemptions: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    /// Layers a token's KV spans: a vLLM block (all layers) is this many of ours.
    pub kv_layers: AtomicU64,
    /// f64 bits: tokens generated per second over the last busy second.
    pub generation_tokens_per_second: AtomicU64,
    ttft_buckets: [AtomicU64; TTFT_BUCKETS.len()],
    ttft_count: AtomicU64,
    /// f64 bits.
    ttft_sum: AtomicU64,
    /// HTTP responses by status class, counted by the front.
    pub http_requests: [AtomicU64; 6],
}

fn add_f64(cell: &AtomicU64, v: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(cur) + v).to_bits();
        match cell.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

impl Metrics {
    pub fn observe_ttft(&self, seconds: f64) {
        for (b, &le) in self.ttft_buckets.iter().zip(&TTFT_BUCKETS) {
            if seconds <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ttft_count.fetch_add(1, Ordering::Relaxed);
        add_f64(&self.ttft_sum, seconds);
    }

    pub fn set_tokens_per_second(&self, v: f64) {
        self.generation_tokens_per_second
            .store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn count_http(&self, status: u16) {
        let class = (status / 100).min(5) as usize;
        self.http_requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus exposition text.
    pub fn render(&self, model: &str) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(s, "{name}{labels} {value}");
            }
        };
        let m = format!("model=\"{}\"", model.replace('"', "'"));
        let one = |v: String| vec![(format!("{{{m}}}"), v)];
        metric(
            "smelt_requests_received_total",
            "counter",
            "Generation requests (sequences) received by the engine.",
            one(get(&self.requests_received).to_string()),
        );
        metric(
            "smelt_requests_finished_total",
            "counter",
            "Sequences finished, by reason.",
            [
                ("stop", &self.finished_stop),
                ("length", &self.finished_length),
                ("cancelled", &self.finished_cancelled),
                ("error", &self.finished_error),
            ]
            .into_iter()
            .map(|(r, c)| (format!("{{{m},reason=\"{r}\"}}"), get(c).to_string()))
            .collect(),
        );
        metric(
            "smelt_http_requests_total",
            "counter",
            "HTTP responses by status class.",
            (1..6)
                .map(|c| {
                    (
                        format!("{{code=\"{c}xx\"}}"),
                        get(&self.http_requests[c]).to_string(),
                    )
                })
                .collect(),
        );
        metric(
            "smelt_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            one(get(&self.prompt_tokens).to_string()),
        );
        metric(
            "smelt_generation_tokens_total",
            "counter",
            "Tokens generated.",
            one(get(&self.generation_tokens).to_string()),
        );
        metric(
            "smelt_queue_depth",
            "gauge",
            "Sequences waiting for a slot or KV cache room.",
            one(get(&self.queue_depth).to_string()),
        );
        metric(
            "smelt_running_sequences",
            "gauge",
            "Sequences in the running batch.",
            one(get(&self.running).to_string()),
        );
        metric(
            "smelt_preemptions_total",
            "counter",
            "Sequences sent back to the queue to free KV cache blocks.",
            one(get(&self.preemptions).to_string()),
        );
        metric(
            "smelt_kv_cache_blocks_used",
            "gauge",
            "KV cache blocks in use.",
            one(get(&self.kv_blocks_used).to_string()),
        );
        metric(
            "smelt_kv_cache_blocks_total",
            "gauge",
            "KV cache blocks the memory budget allows.",
            one(get(&self.kv_blocks_total).to_string()),
        );
        metric(
            "smelt_generation_tokens_per_second",
            "gauge",
            "Aggregate decode throughput over the last busy second.",
            one(format!(
                "{:.3}",
                f64::from_bits(get(&self.generation_tokens_per_second))
            )),
        );
        let mut lines: Vec<(String, String)> = TTFT_BUCKETS
            .iter()
            .zip(&self.ttft_buckets)
            .map(|(le, b)| (format!("_bucket{{{m},le=\"{le}\"}}"), get(b).to_string()))
            .collect();
        let count = get(&self.ttft_count);
        lines.push((format!("_bucket{{{m},le=\"+Inf\"}}"), count.to_string()));
        lines.push((
            format!("_sum{{{m}}}"),
            format!("{:.6}", f64::from_bits(get(&self.ttft_sum))),
        ));
        lines.push((format!("_count{{{m}}}"), count.to_string()));
        metric(
            "smelt_time_to_first_token_seconds",
            "histogram",
            "Time from a request's arrival to its first generated token.",
            lines,
        );
        self.render_vllm(&mut s, model);
        s
    }

    /// The gauges of vLLM's model-server protocol, under vLLM's names, which the Gateway
    /// API Inference Extension / llm-d endpoint picker and autoscalers scrape. A vLLM
    /// block holds 16 tokens of every layer; smelt's blocks hold 16 tokens of one layer,
    /// so `num_gpu_blocks` is smelt's block count over the layer count.
    fn render_vllm(&self, s: &mut String, model: &str) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let m = format!("model_name=\"{}\"", model.replace('"', "'"));
        let total = get(&self.kv_blocks_total);
        let usage = if total == 0 {
            0.0
        } else {
            get(&self.kv_blocks_used) as f64 / total as f64
        };
        let gauges = [
            (
                "vllm:num_requests_running",
                "Requests in the running batch.",
                get(&self.running).to_string(),
            ),
            (
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled.",
                get(&self.queue_depth).to_string(),
            ),
            (
                "vllm:kv_cache_usage_perc",
                "KV cache usage, 0 to 1.",
                format!("{usage:.6}"),
            ),
            (
                "vllm:gpu_cache_usage_perc",
                "KV cache usage, 0 to 1 (vLLM's older name).",
                format!("{usage:.6}"),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{m}}} {v}"
            );
        }
        let blocks = total / get(&self.kv_layers).max(1);
        let _ = writeln!(
            s,
            "# HELP vllm:cache_config_info Information of the KV cache configuration.\n\
             # TYPE vllm:cache_config_info gauge\n\
             vllm:cache_config_info{{{m},block_size=\"{}\",num_gpu_blocks=\"{blocks}\",cache_dtype=\"float32\"}} 1",
            super::kv_cache::BLOCK_TOKENS
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.requests_received.fetch_add(3, Ordering::Relaxed);
        m.observe_ttft(0.03);
        m.observe_ttft(2.0);
        let text = m.render("x");
        assert!(text.contains("smelt_requests_received_total{model=\"x\"} 3"));
        assert!(
            text.contains("smelt_time_to_first_token_seconds_bucket{model=\"x\",le=\"0.05\"} 1")
        );
        assert!(
            text.contains("smelt_time_to_first_token_seconds_bucket{model=\"x\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("smelt_time_to_first_token_seconds_count{model=\"x\"} 2"));
        assert!(text.contains("# TYPE smelt_queue_depth gauge"));
        m.kv_blocks_total.store(300, Ordering::Relaxed);
        m.kv_blocks_used.store(75, Ordering::Relaxed);
        m.kv_layers.store(30, Ordering::Relaxed);
        m.queue_depth.store(4, Ordering::Relaxed);
        let text = m.render("x");
        assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"x\"} 0.250000"));
        assert!(text.contains("vllm:num_requests_waiting{model_name=\"x\"} 4"));
        assert!(text.contains("num_gpu_blocks=\"10\""), "{text}");
    }
}
