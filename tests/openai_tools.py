"""Tool calls, structured output, embeddings and tokenize through the official `openai`
client, outputs checked with the `jsonschema` package.

Usage: python tests/openai_tools.py BASE_URL API_KEY
Run by tests/openai_client.rs on the real test model (SmolLM2, whose template knows no
tools: smelt's generic format, constrained to a call or a reply). Prints one line per
check, exits non-zero on the first failure.
"""
import base64
import json
import struct
import sys

import httpx
import jsonschema
import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
root = base_url.removesuffix("/v1")
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
MODEL = client.models.list().data[0].id
AUTH = {"Authorization": f"Bearer {api_key}"}

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What will the weather be in Paris for the next 3 days?"}]


def check(name):
    def wrap(f):
        f()
        print(f"ok   {name}", flush=True)
    return wrap


def valid_call(call):
    assert call.type == "function" and call.id.startswith("call_"), call
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@check("tool call, required: finish_reason tool_calls, arguments valid")
def _():
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                       max_tokens=120, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert c.message.tool_calls, c.message
    for call in c.message.tool_calls:
        valid_call(call)


@check("tool call, named function, no parallel calls")
def _():
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time", calls
    valid_call(calls[0])


@check("tool call streamed: index, id and name first, then arguments in pieces")
def _():
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=120, temperature=0,
        stream=True))
    calls = {}
    for ch in chunks:
        for d in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            if d.index not in calls:
                assert d.id and d.function.name and d.type == "function", d
                calls[d.index] = {"id": d.id, "name": d.function.name, "args": "", "pieces": 0}
            else:
                assert d.id is None and d.function.name is None, d
            if d.function.arguments:
                calls[d.index]["args"] += d.function.arguments
                calls[d.index]["pieces"] += 1
    assert calls and [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    for c in calls.values():
        assert c["pieces"] > 1, c
        jsonschema.validate(json.loads(c["args"]), SCHEMAS[c["name"]])
    # The same calls as without streaming (greedy).
    full = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                          max_tokens=120, temperature=0)
    assert [(c.function.name, c.function.arguments) for c in full.choices[0].message.tool_calls] == \
        [(c["name"], c["args"]) for c in calls.values()]


@check("tool result round trip: assistant tool_calls and tool message go back into the prompt")
def _():
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=120, temperature=0)
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    history = ASK + [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees."}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, tool_choice="auto",
                                       max_tokens=60, temperature=0)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls"), c
    assert c.message.content or c.message.tool_calls, c
    assert r.usage.prompt_tokens > first.usage.prompt_tokens, (r.usage, first.usage)
    none = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                          max_tokens=16, temperature=0)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


@check("json_schema (strict) output validates; json_object parses")
def _():
    person = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                             "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}}
    for stream in (False, True):
        kw = dict(model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}],
                  max_tokens=150, temperature=0.7, seed=3,
                  response_format={"type": "json_schema",
                                   "json_schema": {"name": "person", "schema": person, "strict": True}})
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(stream=True, **kw) if c.choices)
        else:
            text = client.chat.completions.create(**kw).choices[0].message.content
        jsonschema.validate(json.loads(text), person)
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, temperature=0,
                                       response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@check("grammar extension: regex and Lark through extra_body")
def _():
    import re
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=20, temperature=0,
                                       extra_body={"structured_outputs": {"regex": r"[A-Z][a-z]+ [0-9]{2}"}})
    assert re.fullmatch(r"[A-Z][a-z]+ [0-9]{2}", r.choices[0].message.content), r.choices[0].message.content
    r = client.completions.create(model=MODEL, prompt="Answer yes or no:", max_tokens=10, temperature=0,
                                  extra_body={"structured_outputs": {"grammar": 'start: "yes" | "no"'}})
    assert r.choices[0].text in ("yes", "no"), r.choices[0].text


@check("embeddings: shapes, unit length, base64 equals float")
def _():
    r = client.embeddings.create(model=MODEL, input=["The cat sat.", "A dog ran."], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    v = r.data[0].embedding
    assert len(v) == len(r.data[1].embedding) > 0
    assert abs(sum(x * x for x in v) - 1) < 1e-4
    assert r.usage.prompt_tokens > 0
    b = httpx.post(base_url + "/embeddings", headers=AUTH,
                   json={"model": MODEL, "input": "The cat sat.", "encoding_format": "base64"}).json()
    raw = base64.b64decode(b["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert max(abs(x - y) for x, y in zip(floats, v)) < 1e-6
    ids = httpx.post(root + "/tokenize", headers=AUTH, json={"content": "The cat sat."}).json()["tokens"]
    t = client.embeddings.create(model=MODEL, input=[ids], encoding_format="float").data[0].embedding
    assert max(abs(x - y) for x, y in zip(t, v)) < 1e-6


@check("tokenize / detokenize round trip, pieces, add_special")
def _():
    text = "Héllo wörld, 1234!"
    tok = httpx.post(root + "/tokenize", headers=AUTH, json={"content": text}).json()["tokens"]
    assert all(isinstance(t, int) for t in tok) and tok
    back = httpx.post(root + "/detokenize", headers=AUTH, json={"tokens": tok}).json()["content"]
    assert back == text, back
    pieces = httpx.post(root + "/tokenize", headers=AUTH,
                        json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tok
    special = httpx.post(root + "/tokenize", headers=AUTH, json={"content": text, "add_special": True}).json()
    assert len(special["tokens"]) >= len(tok)
    m = client.models.retrieve(MODEL)
    assert m.model_extra["max_model_len"] > 0


@check("errors name the problem, then still serving")
def _():
    bad = [
        dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
             "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
        dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
        dict(extra_body={"structured_outputs": {"regex": "a("}}),
        dict(extra_body={"structured_outputs": {"grammar": "start: missing_rule"}}),
        dict(response_format={"type": "json_object"}, extra_body={"guided_regex": "a+"}),
        dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
        dict(tools=[{"type": "retrieval"}]),
        dict(tool_choice="required"),
        dict(extra_body={"best_of": 3}),
        dict(extra_body={"frobnicate": True}),
    ]
    for kw in bad:
        try:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **kw)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            assert e.body.get("message") and e.body.get("param"), e.body
        else:
            raise AssertionError(f"{kw} was accepted")
    for path, body in [("/embeddings", {"input": "x", "encoding_format": "int8"}),
                       ("/embeddings", {"input": []}),
                       ("/embeddings", {"input": "x", "dimensions": 8})]:
        r = httpx.post(base_url + path, headers=AUTH, json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], (path, body, r.text)
    for body in [{"tokens": [10 ** 9]}, {"tokens": "x"}]:
        r = httpx.post(root + "/detokenize", headers=AUTH, json=body)
        assert r.status_code in (400, 422), r.text
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, temperature=0)
    assert r.choices[0].message.content


@check("live responses and requests match /openapi.json's schemas")
def _():
    doc = httpx.get(root + "/openapi.json", headers=AUTH).json()

    def valid(name, value):
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(value)

    post = lambda path, body: httpx.post(root + path, headers=AUTH, json=body)  # noqa: E731
    chat = {"model": MODEL, "messages": ASK, "max_tokens": 40, "temperature": 0, "logprobs": True,
            "tools": TOOLS, "tool_choice": "required"}
    valid("ChatRequest", chat)
    valid("ChatCompletion", post("/v1/chat/completions", chat).json())
    valid("ChatCompletion", post("/v1/chat/completions", {"messages": ASK, "max_tokens": 4}).json())
    with httpx.stream("POST", base_url + "/chat/completions", headers=AUTH,
                      json={**chat, "stream": True, "stream_options": {"include_usage": True}}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        valid("ChatCompletionChunk", json.loads(e))
    comp = {"prompt": "Hello", "max_tokens": 4, "logprobs": 2}
    valid("CompletionRequest", comp)
    valid("Completion", post("/v1/completions", comp).json())
    valid("EmbeddingList", post("/v1/embeddings", {"input": ["a", "b"]}).json())
    valid("EmbeddingList", post("/v1/embeddings", {"input": "a", "encoding_format": "base64"}).json())
    valid("TokenizeResponse", post("/tokenize", {"content": "Hi there", "with_pieces": True}).json())
    valid("DetokenizeResponse", post("/detokenize", {"tokens": [1, 2]}).json())
    valid("ModelList", httpx.get(base_url + "/models", headers=AUTH).json())
    valid("ErrorResponse", post("/v1/chat/completions", {"messages": []}).json())
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize",
                 "/v1/models", "/v1/re_isq", "/health", "/metrics"]:
        assert path in doc["paths"], path


print("all tool and structured-output checks passed")
