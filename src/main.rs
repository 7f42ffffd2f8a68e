//! The command line: parses flags with clap and hands off to the library.

use anyhow::{Context, Result};
use candle_core::DType;
use clap::{Args, Parser, Subcommand};
use smelt::engine::sampling::SamplingParams;
use smelt::engine::{Engine, GenerateRequest};
use smelt::loaders::ModelSpec;
use smelt::quant::auto::IsqChoice;
use smelt::quant::{IsqOrganization, IsqType};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Parser)]
#[command(
    name = "smelt",
    version,
    about = "LLM inference with in-situ quantization"
)]
struct Cli {
    /// Quantize linear layers while loading: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K..Q8K
    /// (llama.cpp spellings like Q4_K accepted), HQQ4, HQQ8, FP8, AFQ2, AFQ3, AFQ4, AFQ6,
    /// AFQ8, or a bit width 2|3|4|5|6|8 (→ Q2K, Q3K, Q4K, Q5K, Q6K, Q8_0); or `auto` with
    /// --max-memory: each weight's type chosen by measured error within the budget.
    #[arg(long, global = true, value_parser = parse_isq)]
    isq: Option<String>,
    /// With --isq auto: the most bytes every weight together may take (embedding, head
    /// and norms included): 300MiB, 4GB, 1.5G, or bytes.
    #[arg(long, global = true, value_name = "SIZE")]
    max_memory: Option<String>,
    /// With --isq auto: write the chosen mix as a topology file (--topology loads it).
    #[arg(long, global = true, value_name = "FILE")]
    write_topology: Option<PathBuf>,
    /// YAML file of per-layer (`START-END: {isq: TYPE|none}`) or per-weight (`/regex/`)
    /// ISQ choices overriding --isq.
    #[arg(long, global = true, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Importance matrix for ISQ: llama.cpp's legacy .dat or GGUF imatrix. With
    /// --calibration-file, where the collected imatrix is written instead.
    #[arg(long, global = true, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Collect an imatrix by running the unquantized model over this text, write it
    /// (to --imatrix FILE, default ./imatrix.dat) and quantize with it.
    #[arg(long, global = true, value_name = "TEXT")]
    calibration_file: Option<PathBuf>,
    /// After loading (and ISQ), save the quantized layers to this UQFF file.
    #[arg(long, global = true, value_name = "FILE")]
    write_uqff: Option<PathBuf>,
    /// Take the quantized layers from this UQFF file instead of quantizing (the loader
    /// still names the model, for its config, tokenizer, embeddings and norms).
    #[arg(long, global = true, value_name = "FILE")]
    from_uqff: Option<PathBuf>,
    /// Chunk length (tokens) for --calibration-file.
    #[arg(long, global = true, default_value_t = 512)]
    calibration_ctx: usize,
    /// Which linears --isq quantizes: `default` (every attention and MLP linear) or
    /// `moqe` (only the experts of a mixture-of-experts model such as Mixtral; attention,
    /// router, embeddings and head keep the load dtype). --topology rules still override.
    #[arg(long, global = true, value_name = "ORG", default_value = "default", value_parser = parse_organization)]
    isq_organization: IsqOrganization,
    /// Multiply prompts of block-quantized layers with 8-bit activations, as llama.cpp's
    /// CPU backend does (slower prompts; for like-for-like perplexity with llama.cpp).
    #[arg(long, global = true)]
    q8_activations: bool,
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(short = 't', long, global = true)]
    threads: Option<usize>,
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Interactive chat (the default when no --prompt is given).
    #[arg(short = 'i', long, global = true)]
    interactive: bool,
    /// Run one completion of TEXT, print it, and exit.
    #[arg(long, value_name = "TEXT", global = true)]
    prompt: Option<String>,
    /// With --prompt: wrap TEXT in the model's chat template as a user turn.
    #[arg(long, global = true)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Command,
}

/// The OpenAI-compatible HTTP server (`--port` turns it on).
#[derive(Args, Clone)]
struct ServerArgs {
    /// Serve the OpenAI-compatible HTTP API on this port instead of chatting.
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Address to bind.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics.
    #[arg(long, global = true, env = "SMELT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Model id reported by /v1/models and expected in requests (default: the model's).
    #[arg(long, global = true)]
    served_model_name: Option<String>,
    /// Most sequences decoded together (continuous batching).
    #[arg(long, global = true, default_value_t = 16)]
    max_seqs: usize,
    /// Memory budget of the paged KV cache, MiB (raised to one full context if smaller).
    #[arg(long, global = true, default_value_t = 1024)]
    kv_cache_mb: usize,
    /// Most requests waiting for a slot; more are refused with HTTP 429.
    #[arg(long, global = true, default_value_t = 1024)]
    max_queue: usize,
    /// Largest request body, KiB.
    #[arg(long, global = true, default_value_t = 4096)]
    max_body_kb: usize,
    /// Seconds running requests may finish after SIGINT/SIGTERM before being cancelled.
    #[arg(long, global = true, default_value_t = 10)]
    shutdown_grace: u64,
    /// How /v1/embeddings pools the token states: `last` (the token that saw the whole
    /// input; decoder models) or `mean`.
    #[arg(long, global = true, default_value = "last")]
    embedding_pooling: smelt::engine::Pooling,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Most tokens to generate per reply.
    #[arg(long, global = true, default_value_t = 512)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(
        long,
        global = true,
        default_value_t = 0.7,
        allow_negative_numbers = true
    )]
    temperature: f32,
    #[arg(
        long,
        global = true,
        default_value_t = 0.95,
        allow_negative_numbers = true
    )]
    top_p: f32,
    /// 0 disables.
    #[arg(long, global = true, default_value_t = 40)]
    top_k: usize,
    #[arg(
        long,
        global = true,
        default_value_t = 0.05,
        allow_negative_numbers = true
    )]
    min_p: f32,
    #[arg(
        long,
        global = true,
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    repetition_penalty: f32,
    #[arg(
        long,
        global = true,
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    presence_penalty: f32,
    #[arg(
        long,
        global = true,
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    frequency_penalty: f32,
    /// Seed for reproducible sampling.
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Stop when this string is generated (repeatable).
    #[arg(long, global = true)]
    stop: Vec<String>,
    /// System prompt for chat.
    #[arg(long, global = true)]
    system: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// A Hugging Face checkpoint (safetensors + config.json + tokenizer.json); prequantized GPTQ, AWQ, MLX, bitsandbytes and FP8 checkpoints are detected from config.json.
    Plain(PlainArgs),
    /// An MLX-quantized checkpoint (config.json `quantization: {bits, group_size}`); the
    /// same as `plain`, which detects it too.
    Mlx(PlainArgs),
    /// A GPTQ checkpoint (config.json `quantization_config.quant_method: gptq`, 2/4/8 bits,
    /// act-order included); the same as `plain`, which detects it too.
    Gptq(PlainArgs),
    /// An AWQ checkpoint (`quant_method: awq`, 4-bit GEMM layout); the same as `plain`.
    Awq(PlainArgs),
    /// A GGUF file.
    Gguf(GgufArgs),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(PerplexityArgs),
    /// Prompt-processing and generation speed, as llama-bench reports them.
    Bench(BenchArgs),
}

#[derive(Subcommand, Clone)]
enum LoaderCommand {
    Plain(PlainArgs),
    Mlx(PlainArgs),
    Gptq(PlainArgs),
    Awq(PlainArgs),
    Gguf(GgufArgs),
}

#[derive(Args, Clone)]
struct PlainArgs {
    /// A local directory or a Hugging Face repo id (looked up in the local cache first).
    #[arg(short = 'm', long = "model-id")]
    model_id: String,
    #[arg(long, default_value = "main")]
    revision: String,
    /// Storage dtype for unquantized weights: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: DType,
}

#[derive(Args, Clone)]
struct GgufArgs {
    /// Directory or Hugging Face repo holding the file (optional when -f is a path).
    #[arg(short = 'm', long = "model-id")]
    model_id: Option<String>,
    /// The GGUF file (a path, or a name inside -m).
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Use this tokenizer.json instead of the tokenizer in the GGUF metadata.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Args)]
struct PerplexityArgs {
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    #[command(subcommand)]
    loader: LoaderCommand,
}

#[derive(Args)]
struct BenchArgs {
    /// Prompt tokens for the prompt-processing test (0 skips it).
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Tokens for the generation test (0 skips it).
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5)]
    reps: usize,
    /// Print one JSON object per test instead of the table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    loader: LoaderCommand,
}

fn parse_isq(s: &str) -> Result<String, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok("auto".into());
    }
    s.parse::<IsqType>()
        .map(|t| t.to_string())
        .map_err(|e: anyhow::Error| e.to_string())
}

fn parse_organization(s: &str) -> Result<IsqOrganization, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(format!("unknown dtype `{s}`; valid: f32, f16, bf16")),
    }
}

impl LoaderCommand {
    fn spec(&self) -> (ModelSpec, DType) {
        match self {
            Self::Plain(a) | Self::Mlx(a) | Self::Gptq(a) | Self::Awq(a) => plain_spec(a),
            Self::Gguf(a) => gguf_spec(a),
        }
    }
}

fn plain_spec(a: &PlainArgs) -> (ModelSpec, DType) {
    (
        ModelSpec::Plain {
            model_id: a.model_id.clone(),
            revision: a.revision.clone(),
        },
        a.dtype,
    )
}

fn gguf_spec(a: &GgufArgs) -> (ModelSpec, DType) {
    (
        ModelSpec::Gguf {
            model_id: a.model_id.clone(),
            file: a.file.clone(),
            tokenizer_json: a.tokenizer.clone(),
        },
        DType::F32,
    )
}

fn sampling_params(s: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        logit_bias: Default::default(),
        seed: s.seed,
        ignore_eos: false,
    }
}

fn load_engine(cli: &Cli, (spec, dtype): (ModelSpec, DType)) -> Result<(Engine, f64, f64)> {
    let mut b = smelt::ModelBuilder::from_spec(spec)
        .with_dtype(dtype)
        .with_isq_organization(cli.isq_organization);
    if let Some(c) = IsqChoice::parse(cli.isq.as_deref(), cli.max_memory.as_deref())? {
        b = b.with_isq_choice(c);
    }
    if let Some(p) = &cli.write_topology {
        b = b.with_write_topology(p);
    }
    if let Some(p) = &cli.topology {
        b = b.with_topology(p);
    }
    if let Some(p) = &cli.imatrix {
        b = b.with_imatrix(p);
    }
    if let Some(p) = &cli.calibration_file {
        b = b.with_calibration_file(p, cli.calibration_ctx);
    }
    if let Some(p) = &cli.from_uqff {
        b = b.with_from_uqff(p);
    }
    if let Some(p) = &cli.write_uqff {
        b = b.with_write_uqff(p);
    }
    let loaded = b.build_loaded()?;
    let (load_s, isq_s) = (loaded.load_seconds, loaded.isq_seconds);
    Ok((Engine::new(loaded)?, load_s, isq_s))
}

fn run(cli: Cli) -> Result<()> {
    if let Some(t) = cli.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        // candle's CPU kernels size their parallelism from this variable.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    smelt::quant::kernels::set_q8_activations(cli.q8_activations);
    match &cli.command {
        Command::Plain(a) | Command::Mlx(a) | Command::Gptq(a) | Command::Awq(a) => {
            chat_or_complete(&cli, plain_spec(a))
        }
        Command::Gguf(a) => chat_or_complete(&cli, gguf_spec(a)),
        Command::Perplexity(p) => {
            let text = std::fs::read_to_string(&p.file)
                .with_context(|| format!("cannot read {}", p.file.display()))?;
            let (engine, _, _) = load_engine(&cli, p.loader.spec())?;
            let r = smelt::perplexity::perplexity(&engine, &text, p.ctx, p.chunks)?;
            let chunks: Vec<String> = r
                .per_chunk
                .iter()
                .enumerate()
                .map(|(i, v)| format!("[{}]{v:.4}", i + 1))
                .collect();
            println!("{}", chunks.join(","));
            println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_err);
            Ok(())
        }
        Command::Bench(b) => {
            let (engine, load_s, isq_s) = load_engine(&cli, b.loader.spec())?;
            let rows = smelt::bench::run(&engine, b.n_prompt, b.n_gen, b.reps)?;
            let threads = cli
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let size_mb = engine.model.weights_size_in_bytes() as f64 / (1024.0 * 1024.0);
            let rss_mb = smelt::bench::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0));
            // Decode as a fraction of what memory bandwidth allows: every weight byte is
            // read once per token.
            let bandwidth = smelt::bench::memory_bandwidth(threads);
            let bytes_per_token = engine.model.decode_bytes_per_token() as f64;
            let bound = bandwidth / bytes_per_token;
            let tg = rows
                .iter()
                .find(|r| r.test.starts_with("tg"))
                .map(|r| r.mean_tps);
            if b.json {
                for r in &rows {
                    let line = serde_json::json!({
                        "model": engine.model_name, "size_mib": size_mb, "threads": threads,
                        "test": r.test, "avg_ts": r.mean_tps, "stddev_ts": r.sd_tps, "samples_ts": r.runs,
                        "isq": cli.isq.clone(), "load_s": load_s, "isq_s": isq_s,
                        "peak_rss_mib": rss_mb,
                        "bandwidth_gbs": bandwidth / 1e9, "bytes_per_token": bytes_per_token,
                        "bandwidth_bound_ts": bound,
                    });
                    println!("{line}");
                }
                return Ok(());
            }
            println!("| model | size | threads | test | t/s |");
            println!("| --- | ---: | ---: | ---: | ---: |");
            for r in &rows {
                println!(
                    "| {} | {size_mb:.2} MiB | {threads} | {} | {:.2} ± {:.2} |",
                    engine.model_name, r.test, r.mean_tps, r.sd_tps
                );
            }
            println!("load time: {load_s:.2} s");
            match &cli.isq {
                Some(t) => println!("ISQ time ({t}): {isq_s:.2} s"),
                None => println!("ISQ time: none"),
            }
            if let Some(rss) = rss_mb {
                println!("peak RSS: {rss:.1} MiB");
            }
            println!(
                "memory bandwidth ({threads} threads): {:.1} GB/s; weights read per token: {:.1} MB; bound {bound:.0} t/s",
                bandwidth / 1e9,
                bytes_per_token / 1e6
            );
            if let Some(tg) = tg {
                println!("decode: {:.0} % of the bandwidth bound", 100.0 * tg / bound);
            }
            Ok(())
        }
    }
}

fn chat_or_complete(cli: &Cli, spec: (ModelSpec, DType)) -> Result<()> {
    if let Some(port) = cli.server.port {
        anyhow::ensure!(
            cli.prompt.is_none() && !cli.interactive,
            "--port serves HTTP; it cannot be combined with --prompt or -i"
        );
        let a = &cli.server;
        let cfg = smelt::server::ServerConfig {
            host: a.host.clone(),
            port,
            api_key: a.api_key.clone(),
            served_model_name: a.served_model_name.clone(),
            body_limit: a.max_body_kb << 10,
            shutdown_grace: std::time::Duration::from_secs(a.shutdown_grace),
            scheduler: smelt::engine::scheduler::SchedulerConfig {
                max_seqs: a.max_seqs,
                kv_cache_bytes: a.kv_cache_mb << 20,
                max_queue: a.max_queue,
            },
            embedding_pooling: a.embedding_pooling,
        };
        // Listen first: /health says 503 while the model loads.
        return smelt::server::serve_loading(cfg, || load_engine(cli, spec).map(|l| l.0));
    }
    let (engine, _, _) = load_engine(cli, spec)?;
    let sampling = sampling_params(&cli.sampling);
    sampling.validate()?;
    match (&cli.prompt, cli.interactive) {
        (Some(prompt), false) => {
            let tokens = if cli.chat {
                let mut msgs = Vec::new();
                if let Some(s) = &cli.sampling.system {
                    msgs.push(smelt::engine::chat_template::ChatMessage::new("system", s));
                }
                msgs.push(smelt::engine::chat_template::ChatMessage::new(
                    "user", prompt,
                ));
                engine.chat_tokens(&msgs)?
            } else {
                engine.tokenize(prompt, true)?
            };
            let req = GenerateRequest {
                prompt_tokens: tokens,
                max_tokens: cli.sampling.max_tokens,
                sampling,
                stop: cli.sampling.stop.clone(),
            };
            let mut session = engine.new_session();
            let mut out = std::io::stdout();
            let cancel = AtomicBool::new(false);
            use std::io::Write;
            engine.generate(
                &mut session,
                &req,
                &mut |piece| {
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                },
                &cancel,
            )?;
            println!();
            Ok(())
        }
        (Some(_), true) => anyhow::bail!("--prompt and -i cannot be used together"),
        (None, _) => smelt::repl::run(
            &engine,
            smelt::repl::ReplOptions {
                sampling,
                max_tokens: cli.sampling.max_tokens,
                stop: cli.sampling.stop.clone(),
                system: cli.sampling.system.clone(),
            },
        ),
    }
}

fn main() {
    smelt::tune_allocator();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
