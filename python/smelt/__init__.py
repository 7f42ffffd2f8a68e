"""smelt: LLM inference with in-situ quantization, from Python.

    from smelt import Runner, Which, ChatCompletionRequest
    runner = Runner(which=Which.GGUF(quantized_model_id=".", quantized_filename="model.gguf"),
                    in_situ_quant="Q4K")
    r = runner.send_chat_completion_request(
        ChatCompletionRequest(messages=[{"role": "user", "content": "Hi!"}], max_tokens=32))
    print(r.choices[0].message.content)
"""
from ._smelt import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStream,
    Choice,
    ChunkChoice,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Delta,
    ResponseMessage,
    Runner,
    Usage,
    Which,
)

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionStream",
    "Choice",
    "ChunkChoice",
    "CompletionChoice",
    "CompletionRequest",
    "CompletionResponse",
    "Delta",
    "ResponseMessage",
    "Runner",
    "Usage",
    "Which",
]
