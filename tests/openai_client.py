"""Drives a running smelt server with the official `openai` Python client.

Usage: python tests/openai_client.py BASE_URL API_KEY
Run by tests/openai_client.rs, which starts the server on the real test model. Every check
asserts; the script prints one line per check and exits non-zero on the first failure.
"""
import sys

import httpx
import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
MSGS = [{"role": "user", "content": "What is the capital of France?"}]


def check(name):
    def wrap(f):
        f()
        print(f"ok   {name}", flush=True)
    return wrap


models = client.models.list().data
assert len(models) == 1, models
MODEL = models[0].id


@check("models")
def _():
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL and m.object == "model"


@check("chat non-stream: message, finish_reason, exact usage")
def _():
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0)
    c = r.choices[0]
    assert r.object == "chat.completion" and c.message.role == "assistant", r
    assert c.message.content, r
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    assert 0 < u.completion_tokens <= 12, u
    if c.finish_reason == "length":
        assert u.completion_tokens == 12, u


@check("chat stream: role first, content equals non-stream, usage last")
def _():
    full = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MSGS, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content, (text, full.choices[0].message.content)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason], finals
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens, chunks[-1]
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


@check("content as an array of text parts; system message")
def _():
    parts = [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                          {"type": "text", "text": "of France?"}]}]
    a = client.chat.completions.create(model=MODEL, messages=parts, max_tokens=8, temperature=0)
    b = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=0,
        messages=[parts[0], {"role": "user", "content": "What is the capital of France?"}])
    assert a.choices[0].message.content == b.choices[0].message.content


@check("completions non-stream and stream agree")
def _():
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text, r
    s = list(client.completions.create(model=MODEL, prompt="The capital of France is",
                                       max_tokens=10, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text
    assert r.usage.completion_tokens <= 10


@check("seed reproducibility (temperature 1)")
def _():
    def run(seed):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
            max_tokens=24, temperature=1.0, seed=seed).choices[0].message.content
    a, b = run(1234), run(1234)
    assert a == b, (a, b)
    others = {run(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds should not all give the same text"


@check("n choices, stop strings, logprobs")
def _():
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8, temperature=0.8, n=3, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens == sum(
        len(client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8, temperature=0.8,
                                           seed=7 + c.index, logprobs=True).choices[0].logprobs.content)
        for c in r.choices)
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert " 7" not in r.choices[0].text and r.choices[0].finish_reason == "stop", r.choices[0]
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens, (len(lp), r.usage)
    for t in lp:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        # greedy: the chosen token is the most likely one
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4, t
    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    assert len(r.choices[0].logprobs.tokens) == 4 and len(r.choices[0].logprobs.top_logprobs[0]) == 2


@check("penalties, top_k/min_p extras, logit_bias")
def _():
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8, temperature=0,
                                       presence_penalty=1.0, frequency_penalty=0.5,
                                       extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1},
                                       user="tester")
    assert r.choices[0].message.content
    # A +100 bias forces token 42 every step; echoing the prompt [42, 42, 42] gives its text.
    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0,
                                  logit_bias={"42": 100})
    echo = client.completions.create(model=MODEL, prompt=[42, 42, 42], max_tokens=1, temperature=0, echo=True)
    assert r.choices[0].text and echo.choices[0].text.startswith(r.choices[0].text), (r, echo)


@check("errors: 400/401/404/422, then still serving")
def _():
    for kwargs, exc in [
        (dict(messages=[]), openai.BadRequestError),
        (dict(messages=MSGS, max_tokens=0), openai.BadRequestError),
        (dict(messages=[{"role": "user", "content": "word " * 9000}]), openai.BadRequestError),
        (dict(messages=MSGS, temperature="hot"), openai.UnprocessableEntityError),
        (dict(messages=MSGS, model="no-such-model"), openai.NotFoundError),
    ]:
        kwargs.setdefault("model", MODEL)
        try:
            client.chat.completions.create(**kwargs)
        except exc as e:
            assert e.body and e.body.get("message"), e.body
        else:
            raise AssertionError(f"{kwargs} did not fail with {exc}")
    try:
        OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    raw = httpx.post(base_url + "/chat/completions", content=b"{oops",
                     headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error", raw.text
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=4, temperature=0)
    assert r.choices[0].message.content


print("all openai-client checks passed")
