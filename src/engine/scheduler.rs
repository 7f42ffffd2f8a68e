//! Continuous batching. Requests become sequences; one engine thread runs every running
//! sequence together each step (new prompts join while others decode), bounded by
//! `max_seqs` and by the paged KV cache's memory budget. When the cache is full, new
//! sequences wait in the queue, and a running one that cannot grow is preempted (its blocks
//! freed, its tokens kept, recomputed when it resumes), so no request fails for lack of
//! room. A sequence whose receiver is gone (client disconnected) is dropped at the next
//! step and its blocks return to the pool at once.
//!
//! Fronts talk to it through [`SchedulerHandle`] and tokio channels; it knows nothing of
//! HTTP.

use super::constraint::Constraint;
use super::kv_cache::{BlockPool, KvCache};
use super::metrics::Metrics;
use super::sampling::{log_softmax, Sampler, SamplingParams};
use super::stream::{StopMatcher, TextStream};
use super::{Engine, FinishReason};
use crate::models::BatchItem;
use crate::quant::IsqType;
use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as tmpsc, oneshot};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences in the running batch.
    pub max_seqs: usize,
    /// Bytes the KV cache may take (raised to one full context if smaller).
    pub kv_cache_bytes: usize,
    /// Most sequences waiting; beyond it submissions are refused (HTTP 429).
    pub max_queue: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_seqs: 16,
            kv_cache_bytes: 1 << 30,
            max_queue: 1024,
        }
    }
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Some(k): report each generated token's log-probability and its k best alternatives.
    pub logprobs: Option<usize>,
    /// A compiled grammar the output must follow (structured output, forced tool calls).
    pub constraint: Option<Constraint>,
}

/// A token's log-probability under the model (before sampling penalties).
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The most likely tokens at this position, best first.
    pub top: Vec<(String, f32)>,
}

#[derive(Debug, Clone)]
pub enum SeqEvent {
    /// Newly final text and the logprobs of the tokens it came from.
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish_reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// Why a submission was refused up front.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(String),
    #[error("the server is busy: {0} requests are already waiting")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

enum Command {
    Submit(Box<SeqRequest>, tmpsc::UnboundedSender<SeqEvent>, Instant),
    ReIsq(Option<IsqType>, oneshot::Sender<Result<(), String>>),
    /// Stop admitting; cancel what is still running after `grace`.
    Shutdown(Duration, oneshot::Sender<()>),
}

type ReIsqReply = oneshot::Sender<Result<(), String>>;

/// The fronts' side: cheap to clone, usable from any thread or task.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    pub engine: Arc<RwLock<Engine>>,
    pub metrics: Arc<Metrics>,
    max_queue: usize,
    /// Set by `shutdown`: submissions are refused from then on.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl SchedulerHandle {
    /// Starts the engine thread.
    pub fn start(engine: Engine, cfg: SchedulerConfig) -> Result<Self> {
        if cfg.max_seqs == 0 {
            bail!("--max-seqs must be at least 1");
        }
        let model_cfg = engine.model.config().clone();
        let ctx = model_cfg.max_position_embeddings;
        let mut pool = engine.model.block_pool(cfg.kv_cache_bytes);
        if pool.capacity() < pool.blocks_for_tokens(ctx) {
            // A sequence alone must always fit, or it could wait forever.
            let need = pool.blocks_for_tokens(ctx) * pool.block_bytes();
            tracing::warn!(
                "KV cache budget {} MiB is below one full context; using {} MiB",
                cfg.kv_cache_bytes >> 20,
                need >> 20
            );
            pool = engine.model.block_pool(need);
        }
        tracing::info!(
            "KV cache: {} blocks of {} tokens of one layer ({} MiB), up to {} sequences",
            pool.capacity(),
            super::kv_cache::BLOCK_TOKENS,
            (pool.capacity() * pool.block_bytes()) >> 20,
            cfg.max_seqs
        );
        let metrics = Arc::new(Metrics::default());
        metrics
            .kv_blocks_total
            .store(pool.capacity() as u64, Ordering::Relaxed);
        metrics
            .kv_layers
            .store(model_cfg.num_hidden_layers as u64, Ordering::Relaxed);
        let engine = Arc::new(RwLock::new(engine));
        let (tx, rx) = mpsc::channel();
        let mut worker = Worker {
            rx,
            engine: engine.clone(),
            metrics: metrics.clone(),
            pool,
            ctx,
            max_seqs: cfg.max_seqs,
            waiting: VecDeque::new(),
            running: Vec::new(),
            pending_reisq: Vec::new(),
            submitted: 0,
            shutdown: None,
            window: (Instant::now(), 0),
        };
        std::thread::Builder::new()
            .name("smelt-engine".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            tx,
            engine,
            metrics,
            max_queue: cfg.max_queue,
            stopping: Arc::default(),
        })
    }

    /// Queues a sequence; its events arrive on the returned receiver. Dropping the
    /// receiver cancels the sequence.
    pub fn submit(
        &self,
        req: SeqRequest,
    ) -> Result<tmpsc::UnboundedReceiver<SeqEvent>, SubmitError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        {
            let engine = self.engine.read().map_err(|_| SubmitError::ShuttingDown)?;
            let ctx = engine.context_length();
            let n = req.prompt_tokens.len();
            if n == 0 {
                return Err(SubmitError::Invalid("the prompt is empty".into()));
            }
            if n >= ctx {
                return Err(SubmitError::Invalid(format!(
                    "the prompt is {n} tokens, which does not fit the model's context of {ctx} tokens"
                )));
            }
            req.sampling
                .validate()
                .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        }
        let waiting = self.metrics.queue_depth.load(Ordering::Relaxed) as usize;
        if waiting >= self.max_queue {
            return Err(SubmitError::QueueFull(waiting));
        }
        let (etx, erx) = tmpsc::unbounded_channel();
        self.tx
            .send(Command::Submit(Box::new(req), etx, Instant::now()))
            .map_err(|_| SubmitError::ShuttingDown)?;
        Ok(erx)
    }

    /// Re-quantizes the model once the sequences running now have finished (new ones
    /// wait meanwhile). A bad type or a failure leaves the model as it was.
    pub async fn re_isq(&self, ty: Option<IsqType>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::ReIsq(ty, tx))
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.await.map_err(|_| "the engine has stopped".to_string())?
    }

    /// `re_isq` for callers outside an async runtime (the Python API).
    pub fn re_isq_blocking(&self, ty: Option<IsqType>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::ReIsq(ty, tx))
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.blocking_recv()
            .map_err(|_| "the engine has stopped".to_string())?
    }

    /// Stops admitting work, lets running sequences finish for up to `grace`, then
    /// cancels the rest. Resolves when the engine is idle.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(grace, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Sequence {
    order: u64,
    events: tmpsc::UnboundedSender<SeqEvent>,
    req: Box<SeqRequest>,
    /// Prompt followed by every generated token.
    tokens: Vec<u32>,
    generated: usize,
    /// Present while running; dropped (blocks freed) when waiting or preempted.
    cache: Option<KvCache>,
    sampler: Sampler,
    text: TextStream,
    stop: StopMatcher,
    logprobs: Vec<TokenLogprob>,
    arrived: Instant,
    first_token: bool,
}

impl Sequence {
    fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

struct Worker {
    rx: mpsc::Receiver<Command>,
    engine: Arc<RwLock<Engine>>,
    metrics: Arc<Metrics>,
    pool: Arc<BlockPool>,
    ctx: usize,
    max_seqs: usize,
    waiting: VecDeque<Sequence>,
    /// In admission order (the last is preempted first).
    running: Vec<Sequence>,
    /// Re-ISQ requests with their barrier: sequences submitted before (order < barrier)
    /// finish on the old weights first; later ones wait for the new weights.
    pending_reisq: Vec<(u64, Option<IsqType>, ReIsqReply)>,
    /// Sequences submitted so far (each gets its order number).
    submitted: u64,
    shutdown: Option<(Instant, oneshot::Sender<()>)>,
    /// (start, tokens) of the current throughput window.
    window: (Instant, u64),
}

impl Worker {
    fn run(&mut self) {
        loop {
            let idle = self.running.is_empty() && self.waiting.is_empty();
            if idle && self.pending_reisq.is_empty() {
                if let Some((_, done)) = self.shutdown.take() {
                    let _ = done.send(());
                    return;
                }
                self.metrics.set_tokens_per_second(0.0);
                match self.rx.recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.command(cmd);
            }
            self.drop_cancelled();
            if let Some((deadline, _)) = &self.shutdown {
                if Instant::now() >= *deadline {
                    self.cancel_all(FinishReason::Cancelled);
                }
            }
            let barrier = self.pending_reisq.first().map(|p| p.0);
            if let Some(b) = barrier {
                if self.running.is_empty() && !self.waiting.iter().any(|s| s.order < b) {
                    self.do_reisq();
                }
            }
            if self.shutdown.is_none() {
                self.admit(self.pending_reisq.first().map(|p| p.0));
            }
            if !self.running.is_empty() {
                // A bug in one step must not take the engine down with every later
                // request: fail the sequences of that step and keep serving.
                let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step()));
                if step.is_err() {
                    tracing::error!("an engine step panicked; failing its sequences");
                    for seq in std::mem::take(&mut self.running) {
                        let _ = seq
                            .events
                            .send(SeqEvent::Error("internal error in the engine".into()));
                        self.metrics.finished_error.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.publish_gauges();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req, events, arrived) => {
                self.metrics
                    .requests_received
                    .fetch_add(1, Ordering::Relaxed);
                if self.shutdown.is_some() {
                    let _ = events.send(SeqEvent::Error("the server is shutting down".into()));
                    return;
                }
                self.submitted += 1;
                self.waiting.push_back(Sequence {
                    order: self.submitted,
                    events,
                    tokens: req.prompt_tokens.clone(),
                    generated: 0,
                    cache: None,
                    sampler: Sampler::new(req.sampling.clone()),
                    text: TextStream::new(),
                    stop: StopMatcher::new(&req.stop),
                    logprobs: Vec::new(),
                    arrived,
                    first_token: true,
                    req,
                });
            }
            Command::ReIsq(ty, reply) => self.pending_reisq.push((self.submitted + 1, ty, reply)),
            Command::Shutdown(grace, done) => {
                tracing::info!(
                    "shutting down: {} running, {} waiting; grace {:?}",
                    self.running.len(),
                    self.waiting.len(),
                    grace
                );
                // Waiting sequences never started: end them now.
                for seq in std::mem::take(&mut self.waiting) {
                    self.finish(seq, FinishReason::Cancelled);
                }
                self.shutdown = Some((Instant::now() + grace, done));
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.running.len() + self.waiting.len();
        self.running.retain(|s| !s.events.is_closed());
        self.waiting.retain(|s| !s.events.is_closed());
        let dropped = before - self.running.len() - self.waiting.len();
        if dropped > 0 {
            tracing::debug!("{dropped} sequence(s) cancelled by their client");
            self.metrics
                .finished_cancelled
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    fn cancel_all(&mut self, why: FinishReason) {
        for seq in std::mem::take(&mut self.running) {
            self.finish(seq, why);
        }
        for seq in std::mem::take(&mut self.waiting) {
            self.finish(seq, why);
        }
    }

    /// Runs the first pending re-ISQ (its earlier sequences have all finished).
    fn do_reisq(&mut self) {
        if self.pending_reisq.is_empty() {
            return;
        }
        let (_, ty, reply) = self.pending_reisq.remove(0);
        let result = match self.engine.write() {
            Ok(mut e) => e.re_isq(ty).map_err(|e| format!("{e:#}")),
            Err(_) => Err("the engine lock is poisoned".into()),
        };
        let _ = reply.send(result);
    }

    /// Moves waiting sequences into the batch while there are slots and KV room for
    /// their prompt (first come, first served), none from behind a re-ISQ `barrier`.
    fn admit(&mut self, barrier: Option<u64>) {
        while self.running.len() < self.max_seqs {
            let Some(front) = self.waiting.front() else {
                break;
            };
            if barrier.is_some_and(|b| front.order >= b) {
                break;
            }
            let need = self.pool.blocks_for_tokens(front.tokens.len() + 1);
            if need > self.pool.available() {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            let mut cache = KvCache::new(self.pool.clone(), self.ctx);
            if cache.reserve(seq.tokens.len() + 1).is_err() {
                self.waiting.push_front(seq);
                break;
            }
            seq.cache = Some(cache);
            self.running.push(seq);
        }
    }

    /// Frees the blocks of the most recently admitted sequence and puts it back at the
    /// head of the queue; it resumes by recomputing its tokens.
    fn preempt_last(&mut self) {
        if let Some(mut seq) = self.running.pop() {
            seq.cache = None;
            self.metrics.preemptions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("preempted a sequence of {} tokens", seq.tokens.len());
            self.waiting.push_front(seq);
        }
    }

    /// Makes sure every running sequence has room for its next tokens, preempting from
    /// the back when the pool is dry.
    fn reserve_room(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let seq = &mut self.running[i];
            let n = seq.tokens.len() - seq.cached();
            let ok = seq.cache.as_mut().is_some_and(|c| c.reserve(n).is_ok());
            if ok {
                i += 1;
            } else {
                // The last one goes; if that is this one, it simply waits.
                self.preempt_last();
            }
        }
    }

    fn step(&mut self) {
        self.reserve_room();
        if self.running.is_empty() {
            return;
        }
        if self.engine.is_poisoned() {
            return self.cancel_all(FinishReason::Cancelled);
        }
        let shared = self.engine.clone();
        let Ok(engine) = shared.read() else {
            return;
        };
        let mut feeds: Vec<Vec<u32>> = Vec::with_capacity(self.running.len());
        for seq in &self.running {
            feeds.push(seq.tokens[seq.cached()..].to_vec());
        }
        let prompt_tokens: usize = self
            .running
            .iter()
            .zip(&feeds)
            .filter(|(s, _)| s.generated == 0)
            .map(|(_, f)| f.len())
            .sum();
        let result = {
            let mut items: Vec<BatchItem> = self
                .running
                .iter_mut()
                .zip(&feeds)
                .map(|(seq, feed)| BatchItem {
                    tokens: feed,
                    cache: seq.cache.as_mut().expect("running sequences hold a cache"),
                    logits_from: usize::MAX,
                })
                .collect();
            let t0 = Instant::now();
            let r = engine.model.forward_batch(&mut items);
            tracing::debug!(
                "step: {} sequences, {} tokens, forward {:.1} ms",
                items.len(),
                feeds.iter().map(Vec::len).sum::<usize>(),
                t0.elapsed().as_secs_f64() * 1e3
            );
            r
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!("forward failed: {msg}");
                for seq in std::mem::take(&mut self.running) {
                    let _ = seq.events.send(SeqEvent::Error(msg.clone()));
                    self.metrics.finished_error.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        self.metrics
            .prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        let mut finished = Vec::new();
        for (i, (seq, logits)) in self.running.iter_mut().zip(logits).enumerate() {
            match advance(&engine, seq, &logits, self.ctx, &self.metrics) {
                Ok(None) => {}
                Ok(Some(reason)) => finished.push((i, reason)),
                Err(e) => {
                    let _ = seq.events.send(SeqEvent::Error(format!("{e:#}")));
                    finished.push((i, FinishReason::Cancelled));
                }
            }
        }
        drop(engine);
        let n = self.running.len() as u64;
        self.window.1 += n;
        let elapsed = self.window.0.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            self.metrics
                .set_tokens_per_second(self.window.1 as f64 / elapsed);
            self.window = (Instant::now(), 0);
        }
        for (i, reason) in finished.into_iter().rev() {
            let seq = self.running.remove(i);
            self.finish(seq, reason);
        }
    }

    /// Flushes held-back text, reports the end and releases the sequence's blocks.
    fn finish(&mut self, mut seq: Sequence, reason: FinishReason) {
        if let Some(rest) = seq.stop.flush() {
            let logprobs = std::mem::take(&mut seq.logprobs);
            let _ = seq.events.send(SeqEvent::Text {
                text: rest,
                logprobs,
            });
        }
        let _ = seq.events.send(SeqEvent::Done {
            finish_reason: reason,
            prompt_tokens: seq.req.prompt_tokens.len(),
            completion_tokens: seq.generated,
        });
        let counter = match reason {
            FinishReason::Stop => &self.metrics.finished_stop,
            FinishReason::Length => &self.metrics.finished_length,
            FinishReason::Cancelled => &self.metrics.finished_cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.queue_depth
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        m.running
            .store(self.running.len() as u64, Ordering::Relaxed);
        m.kv_blocks_used
            .store(self.pool.used() as u64, Ordering::Relaxed);
    }
}

/// Samples the sequence's next token from its last logits row and streams its text.
/// Returns the finish reason when the sequence is done.
fn advance(
    engine: &Engine,
    seq: &mut Sequence,
    logits: &candle_core::Tensor,
    ctx: usize,
    metrics: &Metrics,
) -> Result<Option<FinishReason>> {
    let mut row = crate::models::last_logits_vec(logits)?;
    let tok = &engine.assets.tokenizer;
    let report = seq.req.logprobs.map(|k| {
        let lp = log_softmax(&row);
        (lp, k)
    });
    if let Some(c) = seq.req.constraint.as_mut() {
        c.mask(&mut row)?;
    }
    let next = seq.sampler.sample(&mut row, &seq.tokens);
    if seq.first_token {
        seq.first_token = false;
        metrics.observe_ttft(seq.arrived.elapsed().as_secs_f64());
    }
    if engine.assets.eos_token_ids.contains(&next) && !seq.req.sampling.ignore_eos {
        return Ok(Some(FinishReason::Stop));
    }
    if let Some(c) = seq.req.constraint.as_mut() {
        c.advance(next)?;
    }
    seq.tokens.push(next);
    seq.generated += 1;
    metrics.generation_tokens.fetch_add(1, Ordering::Relaxed);
    if let Some((lp, k)) = report {
        let piece = |id: u32| tok.decode(&[id], false).unwrap_or_default();
        let mut order: Vec<u32> = (0..lp.len() as u32).collect();
        let k = k.min(order.len());
        if k > 0 {
            order.select_nth_unstable_by(k - 1, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
            order.truncate(k);
            order.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
        } else {
            order.clear();
        }
        seq.logprobs.push(TokenLogprob {
            token: piece(next),
            logprob: lp[next as usize],
            top: order
                .iter()
                .map(|&id| (piece(id), lp[id as usize]))
                .collect(),
        });
    }
    let piece = seq.text.push(tok, next)?;
    if let Some(emit) = seq.stop.push(&piece) {
        let logprobs = std::mem::take(&mut seq.logprobs);
        let _ = seq.events.send(SeqEvent::Text {
            text: emit,
            logprobs,
        });
    }
    let grammar_done = seq.req.constraint.as_ref().is_some_and(|c| c.is_finished());
    if seq.stop.matched() || grammar_done {
        return Ok(Some(FinishReason::Stop));
    }
    if seq.generated >= seq.req.max_tokens || seq.tokens.len() >= ctx {
        return Ok(Some(FinishReason::Length));
    }
    Ok(None)
}
