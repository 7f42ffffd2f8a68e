//! Reading tool calls out of model output, complete or still growing. One reader serves
//! the final parse and streaming: it reports the content that is certain so far and each
//! call's name and the arguments text written so far.

use super::{new_call_id, ToolCall, ToolFormat, HERMES_OPEN, MISTRAL_MARKER, PYTHON_TAG};

/// A call as far as it has been written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PartialCall {
    pub name: Option<String>,
    /// The arguments' JSON text so far (a prefix of the final text).
    pub args: String,
    /// The arguments value is complete.
    pub done: bool,
}

/// What can be read off the output so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Partial {
    /// Content that will not turn out to be part of a call.
    pub content: String,
    pub calls: Vec<PartialCall>,
}

/// The final reading of a complete output: its content and its calls (with fresh ids).
pub fn parse(format: ToolFormat, text: &str) -> (String, Vec<ToolCall>) {
    let p = read(format, text, true);
    let calls = p
        .calls
        .into_iter()
        .filter_map(|c| {
            Some(ToolCall {
                id: new_call_id(),
                name: c.name?,
                arguments: c.args,
            })
        })
        .collect();
    (p.content, calls)
}

/// Reads `text`; `finished` when no more output will come (then nothing is held back).
pub(super) fn read(format: ToolFormat, text: &str, finished: bool) -> Partial {
    match format {
        ToolFormat::Hermes => read_marked(text, HERMES_OPEN, finished, |t, i| {
            let (call, end) = call_object(t, skip_ws(t, i));
            (vec![call], end)
        }),
        ToolFormat::Mistral => read_marked(text, MISTRAL_MARKER, finished, mistral_calls),
        ToolFormat::Llama3 => read_llama3(text, finished),
        ToolFormat::Generic => read_generic(text, finished),
    }
}

/// Content up to the first `marker`, then calls after each marker.
fn read_marked(
    text: &str,
    marker: &str,
    finished: bool,
    calls_at: impl Fn(&str, usize) -> (Vec<PartialCall>, Option<usize>),
) -> Partial {
    let Some(first) = text.find(marker) else {
        let keep = if finished {
            text.len()
        } else {
            text.len() - marker_prefix_suffix(text, marker)
        };
        return Partial {
            content: text[..keep].to_string(),
            calls: Vec::new(),
        };
    };
    let mut out = Partial {
        content: text[..first].to_string(),
        calls: Vec::new(),
    };
    let mut at = Some(first);
    while let Some(m) = at {
        let (calls, end) = calls_at(text, m + marker.len());
        out.calls.extend(calls);
        at = end.and_then(|e| text[e..].find(marker).map(|k| e + k));
    }
    out
}

/// Mistral: `[TOOL_CALLS][{…}, {…}]`, or the newer `[TOOL_CALLS]name[ARGS]{…}`.
fn mistral_calls(t: &str, i: usize) -> (Vec<PartialCall>, Option<usize>) {
    let i = skip_ws(t, i);
    if t[i..].starts_with('[') {
        let mut calls = Vec::new();
        let mut j = i + 1;
        loop {
            j = skip_ws(t, j);
            match t[j..].chars().next() {
                Some('{') => {
                    let (call, end) = call_object(t, j);
                    calls.push(call);
                    let Some(e) = end else { return (calls, None) };
                    j = skip_ws(t, e);
                    if t[j..].starts_with(',') {
                        j += 1;
                    }
                }
                Some(']') => return (calls, Some(j + 1)),
                _ => return (calls, None),
            }
        }
    }
    let Some(brace) = t[i..].find('{').map(|k| i + k) else {
        return (Vec::new(), None);
    };
    let name = t[i..brace].trim_end_matches("[ARGS]").trim().to_string();
    let end = value_end(t, brace);
    let call = PartialCall {
        name: (!name.is_empty()).then_some(name),
        args: t[brace..end.unwrap_or(t.len())].to_string(),
        done: end.is_some(),
    };
    (vec![call], end)
}

/// Llama 3.x: the whole reply is `{"name": …, "parameters": …}` (several joined by `;`),
/// optionally after `<|python_tag|>`; anything else is content.
fn read_llama3(text: &str, finished: bool) -> Partial {
    let lead = skip_ws(text, 0);
    let mut i = lead;
    if text[i..].starts_with(PYTHON_TAG) {
        i = skip_ws(text, i + PYTHON_TAG.len());
    } else if !finished && PYTHON_TAG.starts_with(&text[i..]) && i < text.len() {
        return Partial::default();
    }
    if !text[i..].starts_with('{') {
        return plain_text(text, i, finished);
    }
    let mut calls = Vec::new();
    loop {
        let (call, end) = call_object(text, i);
        if call.name.is_none() {
            // Not a call (yet): JSON the model answered with, or too early to tell.
            let first_key = first_key(text, i);
            let undecided =
                !finished && (first_key.is_none() || first_key.as_deref() == Some("name"));
            return if calls.is_empty() && !undecided {
                Partial {
                    content: text.to_string(),
                    calls: Vec::new(),
                }
            } else {
                Partial {
                    content: String::new(),
                    calls,
                }
            };
        }
        calls.push(call);
        let Some(e) = end else { break };
        let j = skip_ws(text, e);
        if text[j..].starts_with(';') {
            i = skip_ws(text, j + 1);
            if text[i..].starts_with('{') {
                continue;
            }
        }
        break;
    }
    Partial {
        content: String::new(),
        calls,
    }
}

/// smelt's generic format: `{"tool_calls": [{"name", "arguments"}, …]}` or
/// `{"response": "…"}`; other text is content.
fn read_generic(text: &str, finished: bool) -> Partial {
    let i = skip_ws(text, 0);
    if !text[i..].starts_with('{') {
        return plain_text(text, i, finished);
    }
    let j = skip_ws(text, i + 1);
    let Some(key_end) = string_end(text, j) else {
        return Partial::default();
    };
    let key: String = serde_json::from_str(&text[j..key_end]).unwrap_or_default();
    let v = skip_ws(text, key_end);
    let v = if text[v..].starts_with(':') {
        skip_ws(text, v + 1)
    } else {
        return fallback(text, finished);
    };
    match key.as_str() {
        "response" => Partial {
            content: partial_string(text, v),
            calls: Vec::new(),
        },
        "tool_calls" if text[v..].starts_with('[') => {
            let (calls, _) = mistral_calls(text, v);
            Partial {
                content: String::new(),
                calls,
            }
        }
        _ => fallback(text, finished),
    }
}

/// Output that does not open with a call is content, once there is more than whitespace
/// (or the output is complete).
fn plain_text(text: &str, first: usize, finished: bool) -> Partial {
    Partial {
        content: if finished || first < text.len() {
            text.to_string()
        } else {
            String::new()
        },
        calls: Vec::new(),
    }
}

fn fallback(text: &str, finished: bool) -> Partial {
    Partial {
        content: if finished {
            text.to_string()
        } else {
            String::new()
        },
        calls: Vec::new(),
    }
}

/// `{"name": "f", "arguments": {…}}` (or `"parameters"`) from `i` (at `{`): the call as
/// far as written, and where the object ends once complete.
fn call_object(t: &str, i: usize) -> (PartialCall, Option<usize>) {
    let mut call = PartialCall::default();
    if !t[i..].starts_with('{') {
        return (call, None);
    }
    let mut j = i + 1;
    loop {
        j = skip_ws(t, j);
        match t[j..].chars().next() {
            Some('}') => return (call, Some(j + 1)),
            Some(',') => {
                j += 1;
                continue;
            }
            Some('"') => {}
            _ => return (call, None),
        }
        let Some(key_end) = string_end(t, j) else {
            return (call, None);
        };
        let key: String = serde_json::from_str(&t[j..key_end]).unwrap_or_default();
        let colon = skip_ws(t, key_end);
        if !t[colon..].starts_with(':') {
            return (call, None);
        }
        let v = skip_ws(t, colon + 1);
        let end = value_end(t, v);
        match key.as_str() {
            "name" => {
                let Some(e) = end else { return (call, None) };
                call.name = serde_json::from_str::<String>(&t[v..e]).ok();
            }
            "arguments" | "parameters" => {
                if t[v..].starts_with('"') {
                    // Arguments written as a JSON string: known only once complete.
                    if let Some(e) = end {
                        call.args = serde_json::from_str::<String>(&t[v..e]).unwrap_or_default();
                        call.done = true;
                    }
                } else {
                    call.args = t[v..end.unwrap_or(t.len())].trim_end().to_string();
                    call.done = end.is_some();
                }
            }
            _ => {}
        }
        let Some(e) = end else { return (call, None) };
        j = e;
    }
}

fn first_key(t: &str, i: usize) -> Option<String> {
    let j = skip_ws(t, i + 1);
    let e = string_end(t, j)?;
    serde_json::from_str(&t[j..e]).ok()
}

fn skip_ws(t: &str, mut i: usize) -> usize {
    let b = t.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// From an opening quote at `i`, the index after the closing one.
fn string_end(t: &str, i: usize) -> Option<usize> {
    let b = t.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The index after the complete JSON value starting at `i`, or None while incomplete.
fn value_end(t: &str, i: usize) -> Option<usize> {
    let b = t.as_bytes();
    match *b.get(i)? {
        b'"' => string_end(t, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(t, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number or literal ends at a delimiter; at the end of the text it may go on.
            let end = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())?;
            Some(i + end)
        }
    }
}

/// The decoded text of a JSON string starting at `i`, as far as it is complete.
fn partial_string(t: &str, i: usize) -> String {
    if !t[i..].starts_with('"') {
        return String::new();
    }
    if let Some(e) = string_end(t, i) {
        return serde_json::from_str(&t[i..e]).unwrap_or_default();
    }
    // Cut before a trailing escape that may be incomplete, then close the string.
    let body = &t[i + 1..];
    let cut = body
        .rfind('\\')
        .filter(|&k| body.len() - k < 6)
        .unwrap_or(body.len());
    serde_json::from_str(&format!("\"{}\"", &body[..cut])).unwrap_or_default()
}

/// How many trailing bytes of `text` could begin `marker` (held back while streaming).
fn marker_prefix_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(format: ToolFormat, text: &str) -> (String, Vec<(String, String)>) {
        let (content, calls) = parse(format, text);
        (
            content,
            calls.into_iter().map(|c| (c.name, c.arguments)).collect(),
        )
    }

    #[test]
    fn hermes_calls_and_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let (content, c) = calls(ToolFormat::Hermes, text);
        assert_eq!(content, "Let me check.\n");
        assert_eq!(
            c,
            vec![
                ("get_weather".into(), "{\"city\": \"Paris\"}".into()),
                ("time".into(), "{}".into())
            ]
        );
        assert_eq!(calls(ToolFormat::Hermes, "Just text.").1, vec![]);
    }

    #[test]
    fn llama3_and_mistral_and_generic() {
        let (content, c) = calls(
            ToolFormat::Llama3,
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}; {\"name\": \"g\", \"parameters\": {}}",
        );
        assert_eq!(content, "");
        assert_eq!(
            c,
            vec![("f".into(), "{\"x\": 1}".into()), ("g".into(), "{}".into())]
        );
        // JSON that is not a call stays content.
        let (content, c) = calls(ToolFormat::Llama3, "{\"answer\": 4}");
        assert_eq!((content.as_str(), c.len()), ("{\"answer\": 4}", 0));
        let (_, c) = calls(
            ToolFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"q\": \"a,b}\"}}, {\"name\": \"g\", \"arguments\": {}}]",
        );
        assert_eq!(
            c,
            vec![
                ("f".into(), "{\"q\": \"a,b}\"}".into()),
                ("g".into(), "{}".into())
            ]
        );
        let (_, c) = calls(ToolFormat::Mistral, "[TOOL_CALLS]f[ARGS]{\"q\": 1}");
        assert_eq!(c, vec![("f".into(), "{\"q\": 1}".into())]);
        let (_, c) = calls(
            ToolFormat::Generic,
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}]}",
        );
        assert_eq!(c, vec![("f".into(), "{\"a\": [1, 2]}".into())]);
        let (content, c) = calls(ToolFormat::Generic, "{\"response\": \"Hi \\\"you\\\"\"}");
        assert_eq!((content.as_str(), c.len()), ("Hi \"you\"", 0));
    }

    /// Every prefix of outputs with multi-byte text, escapes and stray markers reads without
    /// panicking, in every format, finished or not.
    #[test]
    fn any_prefix_of_any_output_reads() {
        let texts = [
            "Voilà — «ça» marche.<tool_call>\n{\"name\": \"météo\", \"arguments\": {\"ville\": \"Zürich 🌧\", \"q\": \"\\u00e9\\\"\"}}\n</tool_call>",
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": \"日本\"}}] trailing [TOOL_CALLS]g[ARGS]{\"b\": [1, {\"c\": null}]}",
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": -1.5e3}}; {\"name\": \"g\", \"parameters\": \"{}\"}",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"s\": \"}]\\\\\"}}]}",
            "{\"response\": \"naïve \\ud83d\\ude00 \\\"q\\\" ok\"}",
            "{{{{[[[\"\\\"",
        ];
        for text in texts {
            for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                for format in [
                    ToolFormat::Hermes,
                    ToolFormat::Mistral,
                    ToolFormat::Llama3,
                    ToolFormat::Generic,
                ] {
                    for finished in [false, true] {
                        let _ = read(format, &text[..end], finished);
                    }
                }
            }
        }
        let (_, c) = calls(ToolFormat::Hermes, texts[0]);
        assert_eq!(c[0].0, "météo");
        assert!(serde_json::from_str::<serde_json::Value>(&c[0].1).is_ok());
    }

    #[test]
    fn partial_reads_grow_monotonically() {
        let text = "Sure.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 3}}\n</tool_call>";
        let mut last = Partial::default();
        for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
            let p = read(ToolFormat::Hermes, &text[..end], end == text.len());
            assert!(p.content.starts_with(&last.content), "{end}: {p:?}");
            for (a, b) in last.calls.iter().zip(&p.calls) {
                assert!(b.args.starts_with(&a.args), "{end}: {a:?} -> {b:?}");
            }
            assert!(p.calls.len() >= last.calls.len());
            last = p;
        }
        assert_eq!(last.content, "Sure.");
        assert_eq!(last.calls[0].args, "{\"city\": \"Paris\", \"n\": 3}");
        assert!(last.calls[0].done);
        // A marker's beginning is held back, not streamed as content.
        assert_eq!(read(ToolFormat::Hermes, "Hi <tool_", false).content, "Hi ");
        let g = "{\"response\": \"abc\\u00e9 d";
        assert_eq!(read(ToolFormat::Generic, g, false).content, "abcé d");
    }
}
