#!/usr/bin/env python3
"""Decode speed with and without a JSON-schema constraint, on a running smelt server.

Usage: python scripts/bench-structured.py BASE_URL [ROUNDS]
Streams the same chat request (greedy, 160 tokens) unconstrained and under a JSON schema
whose output cannot end early (an array of free strings), alternating, and reports decode
tokens/s from first to last streamed token: the cost of constrained decoding per token.
Needs the `openai` package (the helper venv of scripts/fetch-test-models.sh has it).
"""
import statistics
import sys
import time

from openai import OpenAI

base = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
client = OpenAI(base_url=base, api_key="x", max_retries=0)
model = client.models.list().data[0].id
msgs = [{"role": "user", "content": "List many English words, as many as you can."}]
schema = {"type": "object", "properties": {"words": {"type": "array", "items": {"type": "string"}}},
          "required": ["words"], "additionalProperties": False}
N = 160


def decode_rate(constrained):
    kw = dict(model=model, messages=msgs, max_tokens=N, temperature=0, stream=True,
              stream_options={"include_usage": True})
    if constrained:
        kw["response_format"] = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    else:
        kw["logit_bias"] = {"2": -100}  # no early end of the reply
    first = last = None
    tokens = 0
    for ch in client.chat.completions.create(**kw):
        now = time.perf_counter()
        if ch.choices and (ch.choices[0].delta.content):
            first = first or now
            last = now
        if ch.usage:
            tokens = ch.usage.completion_tokens
    return (tokens - 1) / (last - first), tokens


decode_rate(True)  # builds the vocabulary index once
free, json_ = [], []
for r in range(rounds):
    for constrained, out in ((False, free), (True, json_)):
        rate, n = decode_rate(constrained)
        out.append(rate)
        print(f"round {r + 1} {'json_schema ' if constrained else 'free       '} {n} tokens {rate:7.1f} t/s", flush=True)
print(f"median decode: free {statistics.median(free):.1f} t/s, json_schema {statistics.median(json_):.1f} t/s, "
      f"ratio {statistics.median(json_) / statistics.median(free):.3f}")
