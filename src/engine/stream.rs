//! Incremental detokenization and stop-string handling for streamed output.

use anyhow::Result;
use tokenizers::Tokenizer;

/// Turns a token stream into text pieces, holding back bytes of incomplete UTF-8.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Tokens before `prefix` are already emitted; decoding restarts a few tokens back so
    /// that byte-level merges across token boundaries come out right.
    prefix: usize,
    emitted: usize,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token and returns the newly final text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let decode = |ids: &[u32]| {
            tok.decode(ids, true)
                .map_err(|e| anyhow::anyhow!("detokenization failed: {e}"))
        };
        let text = decode(&self.ids[self.prefix..])?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or_default().to_string();
        // Move the window forward so decoding stays O(1) per token.
        if self.ids.len() - self.prefix > 8 {
            self.prefix = self.ids.len() - 4;
            self.emitted = decode(&self.ids[self.prefix..])?.len();
        } else {
            self.emitted = text.len();
        }
        Ok(new)
    }
}

/// Accumulates output text, cuts it at the first stop string, and releases only text
/// that can no longer turn into a stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    released: usize,
    matched: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            released: 0,
            matched: false,
        }
    }

    pub fn push(&mut self, piece: &str) -> Option<String> {
        if self.matched {
            return None;
        }
        self.text.push_str(piece);
        let search_from = self
            .released
            .saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        let search_from = floor_char_boundary(&self.text, search_from);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|p| p + search_from)
            })
            .min()
        {
            self.text.truncate(pos);
            self.matched = true;
        }
        let safe = if self.matched {
            self.text.len()
        } else {
            self.text.len() - self.pending_prefix_len()
        };
        if safe > self.released {
            let out = self.text[self.released..safe].to_string();
            self.released = safe;
            Some(out)
        } else {
            None
        }
    }

    /// Length of the longest suffix of the text that starts some stop string.
    fn pending_prefix_len(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > best && self.text.ends_with(&s[..i]) {
                    best = i;
                }
            }
        }
        best
    }

    pub fn matched(&self) -> bool {
        self.matched
    }

    pub fn flush(&mut self) -> Option<String> {
        (self.released < self.text.len()).then(|| {
            let out = self.text[self.released..].to_string();
            self.released = self.text.len();
            out
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_split_across_pieces() {
        let mut m = StopMatcher::new(&["</end>".to_string()]);
        let mut out = String::new();
        for p in ["Hello </", "en", "d> more"] {
            if let Some(s) = m.push(p) {
                out.push_str(&s);
            }
        }
        assert!(m.matched());
        assert_eq!(out, "Hello ");
        assert_eq!(m.text(), "Hello ");
    }

    #[test]
    fn releases_false_prefix() {
        let mut m = StopMatcher::new(&["ab".to_string()]);
        assert_eq!(m.push("xa"), Some("x".to_string()));
        assert_eq!(m.push("c"), Some("ac".to_string()));
        assert!(!m.matched());
        assert_eq!(m.flush(), None);
    }
}
