//! Tool calls while the output streams, in OpenAI's order: content as soon as it cannot be
//! part of a call; per call its index, id and name once the name is complete, then the
//! arguments text in pieces as it is written.

use super::parse::{read, Partial};
use super::{new_call_id, ToolFormat};

#[derive(Debug, Clone, PartialEq)]
pub enum ToolDelta {
    Content(String),
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    Arguments {
        index: usize,
        text: String,
    },
}

pub struct ToolStream {
    format: ToolFormat,
    text: String,
    content_sent: String,
    /// Per started call: arguments bytes sent.
    args_sent: Vec<usize>,
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            text: String::new(),
            content_sent: String::new(),
            args_sent: Vec::new(),
        }
    }

    /// Takes the next piece of output text; returns what can be sent now. The whole output
    /// is read again each time (replies are bounded by max_tokens, and one reader then
    /// serves streaming and the final parse alike).
    pub fn push(&mut self, piece: &str) -> Vec<ToolDelta> {
        self.text.push_str(piece);
        let p = read(self.format, &self.text, false);
        self.deltas(p)
    }

    /// The output is complete: sends what was held back.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        let p = read(self.format, &self.text, true);
        self.deltas(p)
    }

    /// Calls started so far.
    pub fn calls(&self) -> usize {
        self.args_sent.len()
    }

    fn deltas(&mut self, p: Partial) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        // Content is only sent before the first call starts.
        if self.args_sent.is_empty()
            && p.content.len() > self.content_sent.len()
            && p.content.starts_with(&self.content_sent)
        {
            out.push(ToolDelta::Content(
                p.content[self.content_sent.len()..].to_string(),
            ));
            self.content_sent = p.content.clone();
        }
        for (index, call) in p.calls.iter().enumerate() {
            if index == self.args_sent.len() {
                let Some(name) = &call.name else { break };
                out.push(ToolDelta::CallStart {
                    index,
                    id: new_call_id(),
                    name: name.clone(),
                });
                self.args_sent.push(0);
            }
            let sent = self.args_sent[index];
            if call.args.len() > sent && call.args.is_char_boundary(sent) {
                out.push(ToolDelta::Arguments {
                    index,
                    text: call.args[sent..].to_string(),
                });
                self.args_sent[index] = call.args.len();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token-sized pieces give the same calls as the final parse, header first.
    #[test]
    fn streamed_calls_equal_the_final_parse() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {\"z\": [1, {\"a\": \"}\"}]}}\n</tool_call>";
        let mut s = ToolStream::new(ToolFormat::Hermes);
        let mut deltas = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(3) {
            deltas.extend(s.push(&chunk.iter().collect::<String>()));
        }
        deltas.extend(s.finish());
        let mut names = Vec::new();
        let mut args = vec![String::new(); 2];
        for d in &deltas {
            match d {
                ToolDelta::Content(c) => panic!("content {c:?}"),
                ToolDelta::CallStart { index, name, .. } => {
                    assert_eq!(*index, names.len());
                    assert!(args[*index].is_empty(), "arguments before the header");
                    names.push(name.clone());
                }
                ToolDelta::Arguments { index, text } => args[*index].push_str(text),
            }
        }
        let (_, want) = super::super::parse(ToolFormat::Hermes, text);
        assert_eq!(
            names,
            want.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
        );
        assert_eq!(
            args,
            want.iter().map(|c| c.arguments.clone()).collect::<Vec<_>>()
        );
        assert!(
            deltas
                .iter()
                .filter(|d| matches!(d, ToolDelta::Arguments { .. }))
                .count()
                > 4
        );
    }

    #[test]
    fn plain_replies_stream_as_content() {
        let mut s = ToolStream::new(ToolFormat::Generic);
        let mut text = String::new();
        for piece in ["{\"resp", "onse\": \"Hel", "lo\\n wor", "ld\"}"] {
            for d in s.push(piece) {
                let ToolDelta::Content(c) = d else { panic!() };
                text.push_str(&c);
            }
        }
        assert!(s.finish().is_empty());
        assert_eq!(text, "Hello\n world");
        assert_eq!(s.calls(), 0);
    }
}
