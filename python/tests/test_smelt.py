"""The Python API on the real test model (SmolLM2-135M-Instruct: the GGUF and the plain
copy scripts/fetch-test-models.sh puts in ~/.cache/smelt-test-models and the HF cache).
Run by scripts/test.sh after `pip install ./python`."""
import os
import threading
import _thread
import time
from pathlib import Path

import pytest

import smelt
from smelt import ChatCompletionRequest, CompletionRequest, Runner, Which

MODELS = Path(os.environ.get("SMELT_TEST_MODELS", Path.home() / ".cache/smelt-test-models"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PLAIN = "HuggingFaceTB/SmolLM2-135M-Instruct"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def runner():
    return Runner(which=Which.GGUF(quantized_model_id=str(MODELS), quantized_filename=GGUF))


def greedy(runner, messages, n=16):
    r = runner.send_chat_completion_request(
        ChatCompletionRequest(messages=messages, max_tokens=n, temperature=0))
    return r.choices[0].message.content


def test_gguf_chat_is_shaped_like_openai(runner):
    r = runner.send_chat_completion_request(ChatCompletionRequest(messages=ASK, max_tokens=12, temperature=0))
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # The template's rendering, with its default system message.
    assert r.usage.prompt_tokens > len(runner.tokenize("What is the capital of France?"))


def test_stream_equals_non_stream(runner):
    full = runner.send_chat_completion_request(ChatCompletionRequest(messages=ASK, max_tokens=20, temperature=0))
    chunks = list(runner.send_chat_completion_request(
        ChatCompletionRequest(messages=ASK, max_tokens=20, temperature=0, stream=True)))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_seed_and_stop(runner):
    r = runner.send_completion_request(CompletionRequest(prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                                         stop_seqs=[" 7"]))
    assert r.object == "text_completion" and " 7" not in r.choices[0].text
    assert r.choices[0].finish_reason == "stop"
    echo = runner.send_completion_request(CompletionRequest(prompt="Hello", max_tokens=3, temperature=0,
                                                            echo_prompt=True))
    assert echo.choices[0].text.startswith("Hello")
    a, b = (runner.send_chat_completion_request(ChatCompletionRequest(
        messages=ASK, max_tokens=16, temperature=1.0, seed=42)).choices[0].message.content for _ in range(2))
    assert a == b
    many = runner.send_chat_completion_request(ChatCompletionRequest(
        messages=ASK, max_tokens=8, temperature=0.9, seed=1, n_choices=3))
    assert [c.index for c in many.choices] == [0, 1, 2]


def test_tokenize_round_trip(runner):
    text = "Héllo wörld, 1234!"
    ids = runner.tokenize(text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert runner.detokenize(ids) == text
    assert runner.context_length > 0 and runner.model_name == GGUF


def test_threads_are_batched_and_equal_solo_runs(runner):
    prompts = [[{"role": "user", "content": f"Count from {i} to {i + 5}."}] for i in range(8)]
    solo = [greedy(runner, p, 24) for p in prompts]
    out = [None] * 8

    def work(i):
        out[i] = greedy(runner, prompts[i], 24)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == solo
    assert time.time() - start < 60


def test_keyboard_interrupt_stops_a_stream_and_the_runner_goes_on(runner):
    req = ChatCompletionRequest(messages=[{"role": "user", "content": "Write a very long story."}],
                                max_tokens=400, temperature=0, logit_bias={2: -100.0})
    got = 0
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in runner.send_chat_completion_request(ChatCompletionRequest(
                messages=req.messages, max_tokens=400, temperature=0, stream=True, logit_bias={2: -100.0})):
            got += 1
    timer.cancel()
    assert 0 < got < 400
    # A blocking request can be interrupted as well.
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        runner.send_chat_completion_request(req)
    timer.cancel()
    assert greedy(runner, ASK, 8)


def test_errors_are_python_exceptions(runner):
    with pytest.raises(ValueError, match="Q9"):
        Runner(which=Which.GGUF(quantized_model_id=str(MODELS), quantized_filename=GGUF), in_situ_quant="Q9")
    with pytest.raises(FileNotFoundError):
        Runner(which=Which.GGUF(quantized_model_id=str(MODELS), quantized_filename="missing.gguf"))
    with pytest.raises(FileNotFoundError):
        Runner(which=Which.Plain(model_id="/no/such/model/dir"))
    with pytest.raises(ValueError, match="context"):
        runner.send_chat_completion_request(ChatCompletionRequest(
            messages=[{"role": "user", "content": "word " * 9000}], max_tokens=4))
    with pytest.raises(ValueError):
        ChatCompletionRequest(messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(ValueError):
        ChatCompletionRequest(messages=[])
    with pytest.raises(ValueError, match="top_p"):
        runner.send_chat_completion_request(ChatCompletionRequest(messages=ASK, top_p=0.0))
    with pytest.raises(ValueError):
        runner.detokenize([10 ** 8])
    with pytest.raises(ValueError):
        runner.send_re_isq("nonsense")
    with pytest.raises(ValueError):
        Which.Plain(model_id=PLAIN, dtype="f13") and Runner(which=Which.Plain(model_id=PLAIN, dtype="f13"))
    assert greedy(runner, ASK, 4)


def test_plain_isq_and_re_isq():
    r = Runner(which=Which.Plain(model_id=PLAIN), in_situ_quant="Q8_0")
    q8 = greedy(r, ASK, 16)
    assert q8
    r.send_re_isq("Q4K")
    q4 = greedy(r, ASK, 16)
    r.send_re_isq(None)
    f32 = greedy(r, ASK, 16)
    r.send_re_isq("Q8_0")
    assert greedy(r, ASK, 16) == q8, "re-ISQ back to Q8_0 gives the Q8_0 output again"
    dense = Runner(which=Which.Plain(model_id=PLAIN))
    assert greedy(dense, ASK, 16) == f32, "re-ISQ to None is the unquantized model"
    assert q4


def test_which_options_reach_the_loader(tmp_path):
    topo = tmp_path / "topology.yml"
    topo.write_text("0-15:\n  isq: Q8_0\n")
    uqff = tmp_path / "model.uqff"
    a = Runner(which=Which.Plain(model_id=PLAIN, topology=str(topo), write_uqff=str(uqff)))
    assert uqff.stat().st_size > 0
    b = Runner(which=Which.Plain(model_id=PLAIN, from_uqff=str(uqff)))
    assert greedy(a, ASK, 12) == greedy(b, ASK, 12)
    assert isinstance(smelt.__all__, list) and "Runner" in smelt.__all__


def test_auto_isq_under_a_budget_and_its_topology(tmp_path):
    topo = tmp_path / "mix.yml"
    auto = Runner(which=Which.Plain(model_id=PLAIN), in_situ_quant="auto", max_memory="90MB",
                  write_topology=str(topo))
    text = topo.read_text()
    assert "model.embed_tokens:" in text and "lm_head:" in text
    again = Runner(which=Which.Plain(model_id=PLAIN, topology=str(topo)))
    assert greedy(auto, ASK, 12) == greedy(again, ASK, 12)
    with pytest.raises(ValueError, match="max-memory"):
        Runner(which=Which.Plain(model_id=PLAIN), in_situ_quant="auto")
    with pytest.raises(ValueError, match="isq auto"):
        Runner(which=Which.Plain(model_id=PLAIN), in_situ_quant="Q4K", max_memory="90MB")
    with pytest.raises(RuntimeError, match="smallest possible mix"):
        Runner(which=Which.Plain(model_id=PLAIN), in_situ_quant="auto", max_memory="1MB")


def test_readme_example_runs_as_written(capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Hello world" in out and ("stop" in out or "length" in out), out


def test_stub_covers_every_class_and_method():
    import ast
    import inspect

    stub = ast.parse((Path(smelt.__file__).parent / "_smelt.pyi").read_text())
    declared = {}
    for node in ast.walk(stub):
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
    for name in smelt.__all__:
        cls = getattr(smelt, name)
        assert name in declared, f"{name} missing from the stub"
        assert cls.__doc__, f"{name} has no docstring"
        for attr, _ in inspect.getmembers(cls):
            if not attr.startswith("_"):
                assert attr in declared[name], f"{name}.{attr} missing from the stub"
