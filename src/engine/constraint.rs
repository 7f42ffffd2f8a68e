//! Constrained decoding with llguidance: a grammar (JSON schema, Lark or regex) is
//! compiled against the model's own vocabulary, and at every step the logits of tokens the
//! grammar does not allow are set to −∞ before sampling; the sampled token then advances
//! the grammar. Structured output and forced tool calls both go through here.

use anyhow::{anyhow, Context, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use std::sync::Arc;

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Output is one JSON value valid against this schema.
    JsonSchema(Value),
    /// A Lark grammar (llguidance's dialect, with `%json` for embedded schemas).
    Lark(String),
    /// The whole output matches this regular expression.
    Regex(String),
}

/// JSON on one line with `, ` and `: ` between items: free whitespace lets a weak model
/// pad its output with newlines until it runs out of tokens. A schema's own `x-guidance`
/// options win.
pub fn compact_json(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
        });
    }
    schema
}

impl GrammarSpec {
    fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            Self::JsonSchema(s) => TopLevelGrammar::from_json_schema(compact_json(s.clone())),
            Self::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Self::Regex(r) => TopLevelGrammar::from_regex(r),
        }
    }
}

/// The vocabulary as llguidance sees it (each token's bytes), built once per model.
pub struct GrammarCompiler {
    factory: ParserFactory,
}

impl GrammarCompiler {
    /// `n_vocab` is the width of the logits (which may exceed the tokenizer's vocabulary:
    /// padded rows are never allowed); `eos` the token that ends a finished grammar.
    pub fn new(tokenizer: &tokenizers::Tokenizer, eos: u32, n_vocab: usize) -> Result<Self> {
        let json = serde_json::to_value(tokenizer).context("serializing the tokenizer")?;
        // llguidance asserts on vocabularies it does not understand; that must be an
        // error for this request, not a dead engine thread.
        let bytes = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
            .map_err(|_| anyhow!("llguidance could not read this tokenizer's vocabulary"))?
            .context("reading the vocabulary for constrained decoding")?;
        let mut words = bytes;
        words.resize(n_vocab.max(words.len()), Vec::new());
        let info = TokRxInfo::new(words.len() as u32, eos);
        let env = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&(env as _))?;
        // Warnings and errors come back to the caller; nothing on stderr.
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles a grammar; an error names what is wrong with it.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(spec.to_grammar())
            .map_err(|e| anyhow!("{e}"))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(anyhow!("{e}"));
        }
        Ok(Constraint { matcher })
    }
}

/// One sequence's grammar state.
pub struct Constraint {
    matcher: Matcher,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Constraint {
    /// Sets the logits of disallowed tokens to −∞ (only EOS once the grammar is done).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| anyhow!("constrained decoding failed: {e}"))?;
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= mask.len() || !mask.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances the grammar by the sampled token.
    pub fn advance(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| anyhow!("constrained decoding failed: {e}"))
    }

    /// No token but EOS can follow: the output is complete.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Test helpers: a byte-level vocabulary (every byte a token, EOS = 256) and greedy
/// decoding under a constraint.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn compiler() -> GrammarCompiler {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.push(b"\xFF<eos>".to_vec());
        let info = TokRxInfo::new(words.len() as u32, 256);
        let env = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&(env as _)).unwrap();
        factory.quiet();
        GrammarCompiler { factory }
    }

    /// Greedy decoding under the mask, with logits that prefer the bytes of `prefer`.
    pub fn run(c: &mut Constraint, prefer: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for step in 0..512 {
            let mut logits = vec![0.0f32; 257];
            // After the preferred bytes, whatever closes the output soonest.
            for (t, l) in [
                (256usize, 4.0),
                (b'"' as usize, 3.0),
                (b'}' as usize, 2.5),
                (b']' as usize, 2.0),
                (b'1' as usize, 1.5),
            ] {
                logits[t] = l;
            }
            if let Some(&b) = prefer.get(step) {
                logits[b as usize] = 5.0;
            }
            c.mask(&mut logits).unwrap();
            let next = crate::engine::sampling::argmax(&logits);
            if next == 256 {
                break;
            }
            c.advance(next).unwrap();
            out.push(next as u8);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{compiler, run};
    use super::*;

    #[test]
    fn regex_mask_forces_the_pattern() {
        let mut c = compiler()
            .compile(&GrammarSpec::Regex("ab[0-9]{2}".into()))
            .unwrap();
        // The model "wants" xyz; the grammar only lets a, b and two digits through.
        let out = run(&mut c, b"xyz");
        assert_eq!(out.len(), 4);
        assert!(out.starts_with(b"ab") && out[2..].iter().all(u8::is_ascii_digit));
        // Complete: only EOS is left.
        let mut logits = vec![0.0f32; 257];
        c.mask(&mut logits).unwrap();
        let open: Vec<usize> = (0..257).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(open, vec![256]);
    }

    #[test]
    fn json_schema_output_validates() {
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}},
            "required": ["n"], "additionalProperties": false});
        let mut c = compiler()
            .compile(&GrammarSpec::JsonSchema(schema))
            .unwrap();
        let out = run(&mut c, b"{\"n\": 42}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["n"].is_i64(), "{v}");
    }

    #[test]
    fn bad_grammars_are_errors() {
        let c = compiler();
        assert!(c.compile(&GrammarSpec::Regex("a(".into())).is_err());
        assert!(c.compile(&GrammarSpec::Lark("start: foo".into())).is_err());
        assert!(c
            .compile(&GrammarSpec::JsonSchema(
                serde_json::json!({"type": "nonsense"})
            ))
            .is_err());
    }
}
