"""Load generator for OpenAI-compatible servers (smelt, llama-server, vLLM).

For each concurrency level C, C clients each send R streaming chat completions back to
back; every request asks for exactly N new tokens (EOS suppressed by logit_bias and
`ignore_eos`, which smelt ignores and llama-server honours). Reports aggregate decode
throughput (completion tokens / wall time), time to first token (median, p90) and
per-stream decode speed.

Usage: python scripts/bench-serve.py --url http://127.0.0.1:1234/v1 [--concurrency 1,4,16]
       [--requests 2] [--max-tokens 64] [--json]
"""
import argparse
import asyncio
import json
import statistics
import time

import httpx

TOPICS = ["the sea", "a mountain", "a city at night", "an old library", "a robot", "the desert",
          "a violin", "winter", "a train journey", "a garden", "the moon", "a market",
          "a lighthouse", "a forest", "a storm", "a bakery"]


async def one(client, url, model, prompt, max_tokens, headers):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {"0": -100, "1": -100, "2": -100},
        "ignore_eos": True,
    }
    start = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    async with client.stream("POST", url + "/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            ev = json.loads(data)
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
    end = time.perf_counter()
    tokens = usage["completion_tokens"] if usage else chunks
    return {"ttft": (first or end) - start, "tokens": tokens, "decode_s": end - (first or end)}


async def level(url, model, conc, reqs, max_tokens, headers):
    results = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conc + 4)) as client:
        async def worker(i):
            for j in range(reqs):
                prompt = f"Write a long, detailed story about {TOPICS[(i + j * 7) % len(TOPICS)]} (#{i}.{j})."
                results.append(await one(client, url, model, prompt, max_tokens, headers))
        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(conc)))
        wall = time.perf_counter() - start
    toks = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    per_stream = [(r["tokens"] - 1) / r["decode_s"] for r in results if r["decode_s"] > 0 and r["tokens"] > 1]
    return {
        "concurrency": conc,
        "requests": len(results),
        "completion_tokens": toks,
        "wall_s": wall,
        "aggregate_tok_s": toks / wall,
        "ttft_median_s": statistics.median(ttfts),
        "ttft_p90_s": ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))],
        "per_stream_tok_s": statistics.median(per_stream) if per_stream else 0.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    model = a.model or httpx.get(a.url + "/models", headers=headers).json()["data"][0]["id"]
    rows = []
    for c in [int(x) for x in a.concurrency.split(",")]:
        r = asyncio.run(level(a.url, model, c, a.requests, a.max_tokens, headers))
        rows.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"c={c:>3}  requests={r['requests']:>3}  tokens={r['completion_tokens']:>5}  "
                  f"aggregate={r['aggregate_tok_s']:7.1f} tok/s  TTFT median={r['ttft_median_s'] * 1000:7.1f} ms "
                  f"p90={r['ttft_p90_s'] * 1000:7.1f} ms  per-stream={r['per_stream_tok_s']:6.1f} tok/s", flush=True)


if __name__ == "__main__":
    main()
