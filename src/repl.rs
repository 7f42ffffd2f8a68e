//! The interactive front (`-i`): multi-turn chat with streamed replies. On a terminal it
//! has line editing and history, and Ctrl-C stops the reply being written; when stdin is
//! not a terminal every input line is one user turn and replies go to stdout.

use crate::engine::chat_template::ChatMessage;
use crate::engine::sampling::SamplingParams;
use crate::engine::{Engine, FinishReason, GenerateRequest};
use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct ReplOptions {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub system: Option<String>,
}

const HELP: &str = "\
Commands:
  \\help          this text
  \\clear         forget the conversation (keeps the system prompt)
  \\system TEXT   set the system prompt and start over
  \\exit          quit (also Ctrl-D)
Ctrl-C stops the current reply.";

enum Input {
    Line(String),
    Interrupted,
    Eof,
}

trait LineSource {
    fn read(&mut self) -> Result<Input>;
}

struct Terminal {
    editor: rustyline::DefaultEditor,
}

impl LineSource for Terminal {
    fn read(&mut self) -> Result<Input> {
        use rustyline::error::ReadlineError;
        match self.editor.readline("> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = self.editor.add_history_entry(line.as_str());
                }
                Ok(Input::Line(line))
            }
            Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
            Err(ReadlineError::Eof) => Ok(Input::Eof),
            Err(e) => Err(e.into()),
        }
    }
}

struct Piped<R: BufRead> {
    reader: R,
}

impl<R: BufRead> LineSource for Piped<R> {
    fn read(&mut self) -> Result<Input> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(Input::Eof);
        }
        Ok(Input::Line(line.trim_end_matches(['\n', '\r']).to_string()))
    }
}

pub fn run(engine: &Engine, opts: ReplOptions) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // Ctrl-C while a reply streams: stop it. (At the prompt, rustyline sees Ctrl-C
        // itself in raw mode.)
        ctrlc::set_handler(move || cancel.store(true, Ordering::SeqCst))?;
    }
    let mut source: Box<dyn LineSource> = if interactive {
        eprintln!(
            "smelt chat with {} — \\help for commands, Ctrl-D to quit.",
            engine.model_name
        );
        Box::new(Terminal {
            editor: rustyline::DefaultEditor::new()?,
        })
    } else {
        Box::new(Piped {
            reader: std::io::stdin().lock(),
        })
    };
    let mut chat = Conversation::new(opts.system.clone());
    let mut session = engine.new_session();
    loop {
        let line = match source.read()? {
            Input::Line(l) => l,
            Input::Interrupted => continue,
            Input::Eof => break,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(cmd) = trimmed.strip_prefix('\\') {
            let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
            match name {
                "help" => eprintln!("{HELP}"),
                "exit" | "quit" => break,
                "clear" => {
                    chat.clear();
                    session.clear();
                    eprintln!("(conversation cleared)");
                }
                "system" => {
                    chat =
                        Conversation::new((!arg.trim().is_empty()).then(|| arg.trim().to_string()));
                    session.clear();
                    eprintln!("(system prompt set; conversation cleared)");
                }
                other => eprintln!("unknown command \\{other}; \\help lists them"),
            }
            continue;
        }
        chat.messages.push(ChatMessage::new("user", trimmed));
        let prompt_tokens = match engine.chat_tokens(&chat.all()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                chat.messages.pop();
                continue;
            }
        };
        let req = GenerateRequest {
            prompt_tokens,
            max_tokens: opts.max_tokens,
            sampling: opts.sampling.clone(),
            stop: opts.stop.clone(),
        };
        cancel.store(false, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        let result = engine.generate(
            &mut session,
            &req,
            &mut |piece| {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            },
            &cancel,
        );
        println!();
        match result {
            Ok(g) => {
                if g.finish_reason == FinishReason::Cancelled {
                    eprintln!("(stopped)");
                }
                chat.messages.push(ChatMessage::new("assistant", &g.text));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                chat.messages.pop();
                session.clear();
            }
        }
    }
    Ok(())
}

struct Conversation {
    system: Option<String>,
    messages: Vec<ChatMessage>,
}

impl Conversation {
    fn new(system: Option<String>) -> Self {
        Self {
            system,
            messages: Vec::new(),
        }
    }
    fn clear(&mut self) {
        self.messages.clear();
    }
    fn all(&self) -> Vec<ChatMessage> {
        self.system
            .iter()
            .map(|s| ChatMessage::new("system", s))
            .chain(self.messages.iter().cloned())
            .collect()
    }
}
