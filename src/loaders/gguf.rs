//! GGUF files: model shape from metadata, weights kept block-quantized, tokenizer and chat
//! template from metadata unless a tokenizer.json is given.

use super::gguf_file::{GgufFile, GgufValue};
pub(crate) use super::gguf_names::gguf_name;
use super::gguf_names::{expert_parts, unpermute_rows};
use super::hub::ModelFiles;
use super::{LoadOptions, LoadedModel};
use crate::models;
use crate::models::config::{Architecture, GgufMeta, LayerKind, NormPlacement};
use crate::models::rope::{RopeConfig, RopeScaling};
use crate::models::{Embedding, ModelConfig, MoeConfig, WeightSource};
use crate::quant::{GgmlLinear, IsqType, QuantLinear};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

pub fn load(
    model_id: Option<&str>,
    file: &str,
    tokenizer_json: Option<&Path>,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    let (path, files) = locate(model_id, file)?;
    let gguf = GgufFile::open(&path)?;
    let cfg = config_from_gguf(&gguf)
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    let assets = match tokenizer_json {
        Some(p) => {
            let tokenizer = Tokenizer::from_file(p)
                .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", p.display()))?;
            let mut a = super::gguf_tokenizer::assets_from_gguf(&gguf)?;
            a.tokenizer = tokenizer;
            a
        }
        None => match files
            .as_ref()
            .map(|f| f.get("tokenizer.json"))
            .transpose()?
            .flatten()
        {
            Some(_) => super::plain::load_tokenizer_assets(files.as_ref().expect("checked"), &cfg)?,
            None => super::gguf_tokenizer::assets_from_gguf(&gguf)?,
        },
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let src = GgufSource {
        arch: cfg.architecture,
        norms: cfg.variant.norms,
        n_head: cfg.num_attention_heads,
        n_kv_head: cfg.num_key_value_heads,
        file: gguf,
        opts: opts.clone(),
        device: opts.device.clone(),
        embed_cache: Mutex::new(None),
    };
    super::finish_load(cfg, Arc::new(src), assets, name, opts)
}

/// `-f` alone may be a path; with `-m` it names a file inside that directory or repo.
fn locate(model_id: Option<&str>, file: &str) -> Result<(PathBuf, Option<ModelFiles>)> {
    match model_id {
        None => {
            let p = PathBuf::from(file);
            if !p.is_file() {
                bail!("GGUF file {file} not found (pass -m DIR_OR_REPO to look inside a model directory or Hub repo)");
            }
            Ok((p, None))
        }
        Some(id) => {
            let files = ModelFiles::resolve(id, "main", file)?;
            let p = files
                .get(file)?
                .with_context(|| format!("{file} not found in {}", files.describe()))?;
            Ok((p, Some(files)))
        }
    }
}

fn meta<'a>(g: &'a GgufFile, key: &str) -> Result<&'a GgufValue> {
    g.get(key)
        .with_context(|| format!("GGUF metadata has no {key}"))
}

fn meta_usize(g: &GgufFile, key: &str) -> Result<usize> {
    meta(g, key)?
        .as_u64()
        .map(|v| v as usize)
        .with_context(|| format!("GGUF metadata {key} is not an integer"))
}

/// The file's metadata under its architecture prefix, for the family files.
struct ArchMeta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl GgufMeta for ArchMeta<'_> {
    fn num(&self, key: &str) -> Option<f64> {
        let v = self.file.get(&format!("{}.{key}", self.arch))?;
        // Flags (`expert_weights_norm`) are stored as booleans.
        v.as_f64().or_else(|| v.as_bool().map(|b| b as u8 as f64))
    }
    fn nums(&self, key: &str) -> Option<Vec<f64>> {
        let v = self.file.get(&format!("{}.{key}", self.arch))?;
        match v.as_array() {
            Some(a) => a.iter().map(|x| x.as_f64()).collect(),
            None => Some(vec![v.as_f64()?]),
        }
    }
    fn text(&self, key: &str) -> Option<String> {
        Some(
            self.file
                .get(&format!("{}.{key}", self.arch))?
                .as_str()?
                .to_string(),
        )
    }
    fn tensor(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.file.tensor_info(name) {
            Some(info) => Ok(Some(
                qtensor_from_ggml(
                    info.dtype()?,
                    self.file.tensor_bytes(info),
                    info.shape(),
                    &Device::Cpu,
                )?
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            )),
            None => Ok(None),
        }
    }
    fn has_tensor(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }
    fn arch(&self) -> &str {
        self.arch
    }
}

/// llama.cpp's generic rope keys: dimension count, scaling type and its parameters,
/// and per-frequency divisors (`rope_freqs.weight`).
fn rope_from_gguf(g: &dyn GgufMeta, head_dim: usize, max_pos: usize) -> Result<RopeConfig> {
    let mut rope = RopeConfig::plain(g.num("rope.freq_base").unwrap_or(10_000.0), head_dim);
    if let Some(d) = g.num("rope.dimension_count") {
        rope.rotary_dim = d as usize;
    }
    let factor = g.num("rope.scaling.factor");
    let original = g
        .num("rope.scaling.original_context_length")
        .map(|v| v as usize);
    rope.scaling = match g.text("rope.scaling.type").as_deref() {
        None | Some("none") => RopeScaling::None,
        Some("linear") => RopeScaling::Linear {
            factor: factor.context("GGUF rope.scaling.type linear without rope.scaling.factor")?,
        },
        Some("yarn") => {
            let original = original.context(
                "GGUF rope.scaling.type yarn without rope.scaling.original_context_length",
            )?;
            RopeScaling::Yarn {
                factor: factor.unwrap_or(max_pos as f64 / original as f64),
                original_max_position_embeddings: original,
                attention_factor: None,
                beta_fast: g.num("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                beta_slow: g.num("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
                mscale: None,
                // DeepSeek's `yarn_log_multiplier` belongs with its attention (MLA).
                mscale_all_dim: None,
                truncate: true,
            }
        }
        Some(other) => {
            bail!("GGUF rope.scaling.type `{other}` is not supported (none, linear, yarn)")
        }
    };
    rope.freq_factors = g.tensor("rope_freqs.weight")?;
    Ok(rope)
}

pub fn config_from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch_name = meta(g, "general.architecture")?
        .as_str()
        .context("general.architecture is not a string")?
        .to_string();
    let mut architecture = Architecture::parse(&arch_name)?;
    let k = |s: &str| format!("{arch_name}.{s}");
    let am = ArchMeta {
        file: g,
        arch: &arch_name,
    };
    // llama.cpp writes Mixtral as a `llama` model with experts; other MoE families set
    // their MoE in their own file.
    let moe = match g.get(&k("expert_count")).and_then(|v| v.as_u64()) {
        Some(_) if architecture != Architecture::Llama && architecture != Architecture::Mixtral => {
            None
        }
        Some(n) if n > 0 => {
            anyhow::ensure!(
                matches!(architecture, Architecture::Llama | Architecture::Mixtral),
                "mixture-of-experts GGUF files are supported for llama/mixtral only, not {arch_name}"
            );
            architecture = Architecture::Mixtral;
            Some(MoeConfig::mixtral(
                n as usize,
                g.get(&k("expert_used_count"))
                    .and_then(|v| v.as_u64())
                    .map_or(2, |v| v as usize),
                meta_usize(g, &k("feed_forward_length"))?,
            ))
        }
        _ => None,
    };
    let hidden = meta_usize(g, &k("embedding_length"))?;
    let n_head = meta_usize(g, &k("attention.head_count"))?;
    let n_kv = g
        .get(&k("attention.head_count_kv"))
        .and_then(|v| v.as_u64())
        .map_or(n_head, |v| v as usize);
    let head_dim = g
        .get(&k("attention.key_length"))
        .and_then(|v| v.as_u64())
        .map_or(hidden / n_head.max(1), |v| v as usize);
    let vocab = match g.get(&k("vocab_size")).and_then(|v| v.as_u64()) {
        Some(v) => v as usize,
        None => g
            .tensor_info("token_embd.weight")
            .context("GGUF has no token_embd.weight")?
            .shape()[0],
    };
    let f = |key: &str, default: f64| g.get(&k(key)).and_then(|v| v.as_f64()).unwrap_or(default);
    let layers = meta_usize(g, &k("block_count"))?;
    let max_pos = g
        .get(&k("context_length"))
        .and_then(|v| v.as_u64())
        .map_or(4096, |v| v as usize);
    let mut cfg = ModelConfig {
        architecture,
        hidden_size: hidden,
        intermediate_size: meta_usize(g, &k("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: n_head,
        num_key_value_heads: n_kv,
        head_dim,
        vocab_size: vocab,
        rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
        rope: rope_from_gguf(&am, head_dim, max_pos)?,
        local_rope: None,
        max_position_embeddings: max_pos,
        tie_word_embeddings: g.tensor_info("output.weight").is_none(),
        qkv_bias: g.tensor_info("blk.0.attn_q.bias").is_some(),
        moe,
        variant: Default::default(),
        layers: vec![LayerKind::GLOBAL; layers],
        mla: None,
    };
    match architecture {
        Architecture::Llama | Architecture::Mixtral => {}
        Architecture::Qwen2 => models::qwen2::gguf(&mut cfg),
        Architecture::Qwen3 => models::qwen3::gguf(&mut cfg),
        Architecture::Gemma2 => models::gemma2::gguf(&am, &mut cfg)?,
        Architecture::Gemma3 => models::gemma3::gguf(&am, &mut cfg)?,
        Architecture::Phi3 => models::phi3::gguf(&am, &mut cfg)?,
        Architecture::SmolLm3 => models::smollm3::gguf(&mut cfg),
        Architecture::Granite => models::granite::gguf(&am, &mut cfg),
        Architecture::Olmo2 => models::olmo2::gguf(&mut cfg),
        Architecture::Qwen3Moe => models::qwen3_moe::gguf(&am, &mut cfg)?,
        Architecture::DeepSeekV2 | Architecture::DeepSeekV3 => {
            models::deepseek::gguf(&am, &mut cfg)?
        }
        Architecture::GptOss => models::gpt_oss::gguf(&am, &mut cfg)?,
        Architecture::PhiMoe => models::phimoe::gguf(&am, &mut cfg)?,
    }
    cfg.validate()?;
    Ok(cfg)
}

struct GgufSource {
    arch: Architecture,
    norms: NormPlacement,
    n_head: usize,
    n_kv_head: usize,
    file: GgufFile,
    opts: LoadOptions,
    device: Device,
    embed_cache: Mutex<Option<Arc<QTensor>>>,
}

impl GgufSource {
    /// llama.cpp's converter permutes the rows of Q and K so rotary pairs are adjacent
    /// for the architectures it runs with "normal" RoPE (Llama and those built on its
    /// converter); the decoder uses transformers' rotate-half convention, so undo it.
    /// The neox-RoPE families (Qwen, Gemma, Phi-3, OLMo 2) are stored unpermuted.
    fn rope_heads(&self, hf: &str) -> Option<usize> {
        if !matches!(
            self.arch,
            Architecture::Llama
                | Architecture::Mixtral
                | Architecture::Granite
                | Architecture::SmolLm3
        ) {
            return None;
        }
        if hf.ends_with("self_attn.q_proj") {
            Some(self.n_head)
        } else if hf.ends_with("self_attn.k_proj") {
            Some(self.n_kv_head)
        } else {
            None
        }
    }

    /// The GGUF tensor (with `.weight`) holding Hugging Face weight `hf`, and for an
    /// expert stored in llama.cpp's merged 3-D tensor (`blk.N.ffn_gate_exps`, experts
    /// outermost) its index there; older files keep one tensor per expert
    /// (`blk.N.ffn_gate.E`).
    fn tensor_for(&self, hf: &str) -> Result<(String, Option<usize>)> {
        if let Some((layer, kind, e)) = expert_parts(hf) {
            let merged = format!("blk.{layer}.ffn_{kind}_exps.weight");
            if self.file.tensor_info(&merged).is_some() {
                return Ok((merged, Some(e)));
            }
            return Ok((format!("blk.{layer}.ffn_{kind}.{e}.weight"), None));
        }
        Ok((format!("{}.weight", gguf_name(hf, self.norms)?), None))
    }

    fn qtensor(&self, gguf: &str, unpermute_heads: Option<usize>) -> Result<QTensor> {
        self.qtensor_part(gguf, unpermute_heads, None)
    }

    /// Tensor `gguf`, or with `expert` one 2-D slice of a 3-D expert tensor.
    fn qtensor_part(
        &self,
        gguf: &str,
        unpermute_heads: Option<usize>,
        expert: Option<usize>,
    ) -> Result<QTensor> {
        let info = self.file.tensor_info(gguf).with_context(|| {
            format!("tensor {gguf} is missing from {}", self.file.path.display())
        })?;
        let mut bytes = self.file.tensor_bytes(info);
        let mut shape = info.shape();
        let mut last_part = true;
        if let Some(e) = expert {
            anyhow::ensure!(
                shape.len() == 3 && e < shape[0],
                "tensor {gguf} of shape {shape:?} holds no expert {e}"
            );
            let n = shape[0];
            let per = bytes.len() / n;
            bytes = &bytes[e * per..(e + 1) * per];
            shape.remove(0);
            // The pages are shared by all experts: hand them back after the last.
            last_part = e + 1 == n;
        }
        let q = match unpermute_heads {
            Some(heads) => {
                let rows = shape[0];
                let row_bytes = bytes.len() / rows.max(1);
                anyhow::ensure!(
                    heads > 0 && rows % (2 * heads) == 0,
                    "tensor {gguf}: {rows} rows do not split into {heads} rotary heads"
                );
                let reordered = unpermute_rows(bytes, rows, row_bytes, heads);
                qtensor_from_ggml(info.dtype()?, &reordered, shape, &self.device)?
            }
            None => qtensor_from_ggml(info.dtype()?, bytes, shape, &self.device)?,
        };
        if last_part {
            self.file.release(info);
        }
        Ok(q)
    }

    fn dense_tensor(&self, gguf: &str, unpermute_heads: Option<usize>) -> Result<Tensor> {
        Ok(self
            .qtensor(gguf, unpermute_heads)?
            .dequantize(&self.device)?
            .to_dtype(DType::F32)?)
    }

    fn embed_qtensor(&self) -> Result<Arc<QTensor>> {
        let mut cache = self.embed_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = cache.as_ref() {
            return Ok(q.clone());
        }
        let mut q = Arc::new(self.qtensor("token_embd.weight", None)?);
        // A topology rule may give the embedding another block type.
        if let Some(dt) = self.opts.embedding_isq()? {
            if dt != q.dtype() {
                let dense = q.dequantize(&self.device)?;
                if let Some(re) = self.opts.quantize_embedding(&dense, dt)? {
                    q = re;
                }
            }
        }
        *cache = Some(q.clone());
        Ok(q)
    }
}

impl GgufSource {
    /// Tensor `gguf` (or one expert's slice of it) as an MXFP4 layer when the file stores
    /// it as MXFP4 (GPT-OSS's experts); None for every other type.
    fn mxfp4_part(
        &self,
        gguf: &str,
        expert: Option<usize>,
        bias: Option<Tensor>,
    ) -> Result<Option<crate::quant::Mxfp4Linear>> {
        let Some(info) = self.file.tensor_info(gguf) else {
            return Ok(None);
        };
        if info.ty != super::gguf_file::TensorType::Mxfp4 {
            return Ok(None);
        }
        let mut shape = info.shape();
        let mut bytes = self.file.tensor_bytes(info);
        if let Some(e) = expert {
            anyhow::ensure!(
                shape.len() == 3 && e < shape[0],
                "tensor {gguf} of shape {shape:?} holds no expert {e}"
            );
            let per = bytes.len() / shape[0];
            bytes = &bytes[e * per..(e + 1) * per];
            shape.remove(0);
        }
        anyhow::ensure!(
            shape.len() == 2,
            "MXFP4 tensor {gguf} of shape {shape:?} is not a matrix"
        );
        let lin = crate::quant::Mxfp4Linear::from_bytes(bytes.to_vec(), shape[0], shape[1], bias)?;
        if expert.is_none_or(|e| e + 1 == info.shape()[0]) {
            self.file.release(info);
        }
        Ok(Some(lin))
    }

    /// DeepSeek's `kv_b_proj` from the `attn_k_b` / `attn_v_b` pair llama.cpp's converter
    /// splits it into (k_b per head transposed to lora × nope, v_b per head v × lora):
    /// per head, the nope rows then the v rows, as in the checkpoint. None when the file
    /// keeps `attn_kv_b` whole.
    fn kv_b_from_split(&self, hf: &str) -> Result<Option<Tensor>> {
        let base = gguf_name(hf, self.norms)?;
        let (k_name, v_name) = (
            format!("{}.weight", base.replace("attn_kv_b", "attn_k_b")),
            format!("{}.weight", base.replace("attn_kv_b", "attn_v_b")),
        );
        if self.file.tensor_info(&k_name).is_none() {
            return Ok(None);
        }
        let k = self.dense_tensor(&k_name, None)?; // (heads, lora, nope)
        let v = self.dense_tensor(&v_name, None)?; // (heads, v, lora)
        let (heads, lora, _) = k.dims3()?;
        anyhow::ensure!(
            v.dims3()?.0 == heads && v.dims3()?.2 == lora,
            "{k_name} {:?} and {v_name} {:?} do not pair up",
            k.dims(),
            v.dims()
        );
        let k = k.transpose(1, 2)?; // (heads, nope, lora)
        let w = Tensor::cat(&[&k, &v], 1)?; // (heads, nope + v, lora)
        let rows = w.dims3()?.1 * heads;
        Ok(Some(w.reshape((rows, lora))?.contiguous()?))
    }
}

impl WeightSource for GgufSource {
    fn device(&self) -> &Device {
        &self.device
    }
    fn has(&self, name: &str) -> bool {
        self.tensor_for(name)
            .is_ok_and(|(n, _)| self.file.tensor_info(&n).is_some())
    }
    fn linear(&self, name: &str, bias: bool) -> Result<Arc<dyn QuantLinear>> {
        self.linear_as(name, bias, self.opts.isq_for(name))
    }
    fn re_isq_type(&self, name: &str, ty: Option<IsqType>) -> Option<IsqType> {
        self.opts.re_isq_type(name, ty)
    }
    fn linear_as(
        &self,
        name: &str,
        bias: bool,
        isq: Option<IsqType>,
    ) -> Result<Arc<dyn QuantLinear>> {
        let heads = self.rope_heads(name);
        let bias = match (bias, expert_parts(name)) {
            (false, _) => None,
            // One expert's row of llama.cpp's stacked `ffn_*_exps.bias` (experts, out).
            (true, Some((layer, kind, e))) => Some(
                self.dense_tensor(&format!("blk.{layer}.ffn_{kind}_exps.bias"), None)?
                    .get(e)?,
            ),
            (true, None) => {
                Some(self.dense_tensor(&format!("{}.bias", gguf_name(name, self.norms)?), heads)?)
            }
        };
        if name.ends_with("self_attn.kv_b_proj") {
            if let Some(w) = self.kv_b_from_split(name)? {
                return match isq {
                    Some(ty) => self.opts.quantize(name, &w, None, ty),
                    None => Ok(Arc::new(crate::quant::UnquantLinear::new(w, None)?)),
                };
            }
        }
        let (tensor, expert) = self.tensor_for(name)?;
        if let Some(lin) = self.mxfp4_part(&tensor, expert, bias.clone())? {
            return match isq {
                Some(ty) => self.opts.quantize(name, &lin.dequantize()?, bias, ty),
                None => Ok(Arc::new(lin)),
            };
        }
        let q = self.qtensor_part(&tensor, heads, expert)?;
        let lin = GgmlLinear::new(Arc::new(q), bias)?;
        match isq {
            Some(ty) => self
                .opts
                .quantize(name, &lin.dequantize()?, lin.bias().cloned(), ty)
                .with_context(|| format!("quantizing {tensor} to {ty}")),
            None => Ok(Arc::new(lin)),
        }
    }
    fn dense(&self, name: &str) -> Result<Tensor> {
        let gguf = format!("{}.weight", gguf_name(name, self.norms)?);
        // llama.cpp's gpt-oss keeps Llama's pre-FFN norm under `post_attention_norm`.
        if self.file.tensor_info(&gguf).is_none() && name.ends_with("post_attention_layernorm") {
            let alt = gguf.replace("ffn_norm", "post_attention_norm");
            if self.file.tensor_info(&alt).is_some() {
                return self.dense_tensor(&alt, None);
            }
        }
        self.dense_tensor(&gguf, None)
    }
    fn dense_raw(&self, name: &str) -> Result<Tensor> {
        let gguf = match name.rsplit_once('.') {
            // DeepSeek V3's router bias: llama.cpp's `exp_probs_b.bias`.
            Some((module, "e_score_correction_bias")) => format!(
                "{}.bias",
                gguf_name(module, self.norms)?.replace("ffn_gate_inp", "exp_probs_b")
            ),
            // GPT-OSS's per-head sinks: llama.cpp's `attn_sinks.weight`.
            Some((module, "sinks")) => format!(
                "{}.weight",
                gguf_name(&format!("{module}.q_proj"), self.norms)?.replace("attn_q", "attn_sinks")
            ),
            Some((module, suffix)) => format!("{}.{suffix}", gguf_name(module, self.norms)?),
            None => bail!("no GGUF name for {name}"),
        };
        self.dense_tensor(&gguf, None)
    }
    fn embedding(&self, _name: &str) -> Result<Embedding> {
        let q = self.embed_qtensor()?;
        Ok(match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Embedding::Dense(q.dequantize(&self.device)?)
            }
            _ => Embedding::Quantized(q),
        })
    }
    fn lm_head(&self, name: &str, tied: Option<&str>) -> Result<Arc<dyn QuantLinear>> {
        let q = match tied {
            Some(_) => self.embed_qtensor()?,
            None => {
                Arc::new(self.qtensor(&format!("{}.weight", gguf_name(name, self.norms)?), None)?)
            }
        };
        let head = GgmlLinear::new(q, None)?;
        match self.opts.head_isq() {
            // Already that type (a tied head shares the embedding's blocks).
            Some(ty)
                if ty.for_row_len(head.shape().1)
                    == Some(IsqType::Ggml(head.qtensor().dtype())) =>
            {
                Ok(Arc::new(head))
            }
            Some(ty) => head.apply_isq(ty),
            None => Ok(Arc::new(head)),
        }
    }
}
