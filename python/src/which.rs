//! `Which`: what model to load and how, as in the peer's API. Ids resolve as the CLI's:
//! a local directory, else a Hugging Face repo in the local cache (then the Hub).

use crate::errors::{engine_error, value_error};
use candle_core::DType;
use pyo3::prelude::*;
use smelt::loaders::hub::ModelFiles;
use smelt::loaders::ModelSpec;
use smelt::quant::auto::IsqChoice;
use smelt::quant::IsqOrganization;
use smelt::{IsqType, ModelBuilder};
use std::path::PathBuf;

/// The model to load. `Which.Plain(model_id, ...)`: a Hugging Face checkpoint
/// (safetensors; GPTQ, AWQ, MLX, bitsandbytes and FP8 ones are detected);
/// `Which.GGUF(quantized_model_id, quantized_filename, tok_model_id=None, ...)`: a GGUF
/// file in a directory or repo. Both take ISQ options: `topology` (YAML file),
/// `organization` (`"default"` or `"moqe"`), `imatrix` (file), `calibration_file` (text
/// to collect an imatrix from), `from_uqff` / `write_uqff` (UQFF files).
#[pyclass(module = "smelt", frozen, from_py_object)]
#[derive(Clone, Debug)]
// `Which.GGUF` is the peer's spelling, which scripts use.
#[allow(clippy::upper_case_acronyms)]
pub enum Which {
    #[pyo3(constructor = (model_id, dtype = None, topology = None, organization = None, imatrix = None,
        calibration_file = None, from_uqff = None, write_uqff = None, revision = None))]
    Plain {
        model_id: String,
        dtype: Option<String>,
        topology: Option<PathBuf>,
        organization: Option<String>,
        imatrix: Option<PathBuf>,
        calibration_file: Option<PathBuf>,
        from_uqff: Option<PathBuf>,
        write_uqff: Option<PathBuf>,
        revision: Option<String>,
    },
    #[pyo3(constructor = (quantized_model_id, quantized_filename, tok_model_id = None, topology = None,
        organization = None, imatrix = None, calibration_file = None, from_uqff = None, write_uqff = None))]
    GGUF {
        quantized_model_id: String,
        quantized_filename: String,
        tok_model_id: Option<String>,
        topology: Option<PathBuf>,
        organization: Option<String>,
        imatrix: Option<PathBuf>,
        calibration_file: Option<PathBuf>,
        from_uqff: Option<PathBuf>,
        write_uqff: Option<PathBuf>,
    },
}

/// Chunk length for imatrix collection (the CLI's default).
const CALIBRATION_CTX: usize = 512;

pub fn parse_isq(name: &str) -> PyResult<IsqType> {
    name.parse::<IsqType>()
        .map_err(|e| value_error(format!("{e:#}")))
}

fn parse_dtype(d: &str) -> PyResult<DType> {
    match d.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(value_error(format!(
            "unknown dtype `{other}`; use f32, f16 or bf16"
        ))),
    }
}

fn parse_organization(o: &str) -> PyResult<IsqOrganization> {
    match o.to_ascii_lowercase().as_str() {
        "default" => Ok(IsqOrganization::Default),
        "moqe" => Ok(IsqOrganization::Moqe),
        other => Err(value_error(format!(
            "unknown ISQ organization `{other}`; use default or moqe"
        ))),
    }
}

/// The ISQ options both variants carry, borrowed.
struct IsqOptions<'a> {
    topology: &'a Option<PathBuf>,
    organization: &'a Option<String>,
    imatrix: &'a Option<PathBuf>,
    calibration_file: &'a Option<PathBuf>,
    from_uqff: &'a Option<PathBuf>,
    write_uqff: &'a Option<PathBuf>,
}

impl IsqOptions<'_> {
    fn apply(&self, mut b: ModelBuilder) -> PyResult<ModelBuilder> {
        if let Some(o) = self.organization {
            b = b.with_isq_organization(parse_organization(o)?);
        }
        if let Some(p) = self.topology {
            b = b.with_topology(p);
        }
        if let Some(p) = self.imatrix {
            b = b.with_imatrix(p);
        }
        if let Some(p) = self.calibration_file {
            b = b.with_calibration_file(p, CALIBRATION_CTX);
        }
        if let Some(p) = self.from_uqff {
            b = b.with_from_uqff(p);
        }
        if let Some(p) = self.write_uqff {
            b = b.with_write_uqff(p);
        }
        Ok(b)
    }
}

impl Which {
    /// The builder for this model, with `in_situ_quant` (an ISQ type name, or `auto`
    /// with its `max_memory` budget) if given.
    pub fn builder(
        &self,
        in_situ_quant: Option<&str>,
        max_memory: Option<&str>,
    ) -> PyResult<ModelBuilder> {
        let (mut b, opts) = match self {
            Which::Plain {
                model_id,
                dtype,
                topology,
                organization,
                imatrix,
                calibration_file,
                from_uqff,
                write_uqff,
                revision,
            } => {
                let mut b = ModelBuilder::new(model_id)
                    .with_revision(revision.as_deref().unwrap_or("main"));
                if let Some(d) = dtype {
                    b = b.with_dtype(parse_dtype(d)?);
                }
                let opts = IsqOptions {
                    topology,
                    organization,
                    imatrix,
                    calibration_file,
                    from_uqff,
                    write_uqff,
                };
                (b, opts)
            }
            Which::GGUF {
                quantized_model_id,
                quantized_filename,
                tok_model_id,
                topology,
                organization,
                imatrix,
                calibration_file,
                from_uqff,
                write_uqff,
            } => {
                // The tokenizer of another model (its tokenizer.json) when asked for;
                // otherwise the GGUF's own, or a tokenizer.json beside it.
                let tokenizer_json = match tok_model_id {
                    None => None,
                    Some(id) => {
                        let files = ModelFiles::resolve(id, "main", "tokenizer.json")
                            .map_err(engine_error)?;
                        files.get("tokenizer.json").map_err(engine_error)?
                    }
                };
                let b = ModelBuilder::from_spec(ModelSpec::Gguf {
                    model_id: Some(quantized_model_id.clone()),
                    file: quantized_filename.clone(),
                    tokenizer_json,
                });
                let opts = IsqOptions {
                    topology,
                    organization,
                    imatrix,
                    calibration_file,
                    from_uqff,
                    write_uqff,
                };
                (b, opts)
            }
        };
        let choice = IsqChoice::parse(in_situ_quant, max_memory)
            .map_err(|e| value_error(format!("{e:#}")))?;
        if let Some(c) = choice {
            b = b.with_isq_choice(c);
        }
        opts.apply(b)
    }
}
