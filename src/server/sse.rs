//! Streamed replies: the engine's events of every choice as OpenAI's SSE chunks (chat
//! chunks, tool-call deltas included, or text_completion chunks), ending with
//! `data: [DONE]`; the task stops, cancelling the sequences, when the client goes away.

use super::routes::{chat_logprobs, completion_logprobs, usage, Choice};
use super::AppState;
use crate::engine::scheduler::{SeqEvent, TokenLogprob};
use crate::engine::tools::{ToolDelta, ToolSetup, ToolStream};
use crate::engine::FinishReason;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(super) enum StreamShape {
    /// With tools, output is read as calls while it streams.
    Chat { tools: Option<ToolSetup> },
    /// Some(prompt texts) when the prompt is echoed first.
    Completion { echo: Option<Vec<String>> },
}

/// Streams the choices as SSE chunks from a task that ends (dropping the engine's
/// receivers, which cancels the sequences) as soon as the client goes away.
pub(super) fn stream_response(
    shape: StreamShape,
    st: Arc<AppState>,
    id: String,
    created: u64,
    choices: Vec<Choice>,
    prompt_lens: Vec<usize>,
    include_usage: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let chunk = |choices: Value, usage: Option<Value>| {
            let object = match shape {
                StreamShape::Chat { .. } => "chat.completion.chunk",
                StreamShape::Completion { .. } => "text_completion",
            };
            let mut c = json!({
                "id": id,
                "object": object,
                "created": created,
                "model": st.model_name,
                "system_fingerprint": st.fingerprint,
                "choices": choices,
            });
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            Event::default().data(c.to_string())
        };
        let piece = |index: usize,
                     text: &str,
                     lps: &[TokenLogprob],
                     offset: usize,
                     finish: Option<&str>| {
            match &shape {
                StreamShape::Chat { .. } => {
                    let delta = if finish.is_some() && text.is_empty() {
                        json!({})
                    } else {
                        json!({"content": text})
                    };
                    json!([{
                        "index": index,
                        "delta": delta,
                        "logprobs": (!lps.is_empty()).then(|| chat_logprobs(lps)),
                        "finish_reason": finish,
                    }])
                }
                StreamShape::Completion { .. } => json!([{
                    "index": index,
                    "text": text,
                    "logprobs": (!lps.is_empty()).then(|| completion_logprobs(lps, offset)),
                    "finish_reason": finish,
                }]),
            }
        };
        // Opening chunks: the assistant role (chat) or the echoed prompt.
        for c in &choices {
            let first = match &shape {
                StreamShape::Chat { .. } => json!([{
                    "index": c.index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": null,
                }]),
                StreamShape::Completion { echo: Some(texts) } => {
                    piece(c.index, &texts[c.prompt], &[], 0, None)
                }
                StreamShape::Completion { echo: None } => continue,
            };
            if tx.send(chunk(first, None)).await.is_err() {
                return;
            }
        }
        let mut offsets = vec![0usize; choices.len()];
        let tool_setup = match &shape {
            StreamShape::Chat { tools } => tools.clone(),
            StreamShape::Completion { .. } => None,
        };
        let mut tool_streams: Vec<Option<ToolStream>> = (0..choices.len())
            .map(|_| tool_setup.as_ref().map(|t| ToolStream::new(t.format)))
            .collect();
        let max_calls = match &tool_setup {
            Some(t) if !t.parallel => 1,
            _ => usize::MAX,
        };
        // One chunk per tool delta, the text's logprobs on the first.
        let tool_chunks = |index: usize,
                           deltas: Vec<ToolDelta>,
                           lps: &[TokenLogprob]|
         -> Vec<Value> {
            let mut out: Vec<Value> = deltas
                .into_iter()
                .filter_map(|d| {
                    let delta = match d {
                        ToolDelta::Content(c) => json!({"content": c}),
                        ToolDelta::CallStart { index: i, .. } | ToolDelta::Arguments { index: i, .. }
                            if i >= max_calls =>
                        {
                            return None
                        }
                        ToolDelta::CallStart { index: i, id, name } => json!({"tool_calls": [{
                            "index": i, "id": id, "type": "function",
                            "function": {"name": name, "arguments": ""}}]}),
                        ToolDelta::Arguments { index: i, text } => {
                            json!({"tool_calls": [{"index": i, "function": {"arguments": text}}]})
                        }
                    };
                    Some(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]))
                })
                .collect();
            if !lps.is_empty() {
                if out.is_empty() {
                    out.push(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": null}]));
                }
                out[0][0]["logprobs"] = chat_logprobs(lps);
            }
            out
        };
        let mut completion_tokens = 0;
        let mut streams: futures_util::stream::SelectAll<_> = choices
            .into_iter()
            .enumerate()
            .map(|(slot, c)| {
                futures_util::stream::unfold(c, move |mut c| async move {
                    let ev = c.events.recv().await?;
                    Some(((slot, c.index, ev), c))
                })
                .boxed()
            })
            .collect();
        use futures_util::StreamExt;
        loop {
            let next = tokio::select! {
                ev = streams.next() => ev,
                _ = tx.closed() => return,
            };
            let Some((slot, index, ev)) = next else { break };
            let outs = match ev {
                SeqEvent::Text { text, logprobs } => match tool_streams[slot].as_mut() {
                    Some(ts) => tool_chunks(index, ts.push(&text), &logprobs)
                        .into_iter()
                        .map(|c| chunk(c, None))
                        .collect(),
                    None => {
                        let c = chunk(piece(index, &text, &logprobs, offsets[slot], None), None);
                        offsets[slot] += text.len();
                        vec![c]
                    }
                },
                SeqEvent::Done {
                    finish_reason,
                    completion_tokens: n,
                    ..
                } => {
                    completion_tokens += n;
                    let mut reason = finish_reason.as_str();
                    let mut outs = Vec::new();
                    if let Some(ts) = tool_streams[slot].as_mut() {
                        outs.extend(tool_chunks(index, ts.finish(), &[]).into_iter().map(|c| chunk(c, None)));
                        if ts.calls() > 0 && finish_reason == FinishReason::Stop {
                            reason = "tool_calls";
                        }
                    }
                    outs.push(chunk(piece(index, "", &[], offsets[slot], Some(reason)), None));
                    outs
                }
                SeqEvent::Error(e) => vec![Event::default().data(
                    json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}})
                        .to_string(),
                )],
            };
            for out in outs {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        }
        if include_usage {
            let u = usage(prompt_lens.iter().sum(), completion_tokens);
            if tx.send(chunk(json!([]), Some(u))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}
