"""Type stubs of smelt's extension module (python/src/*.rs)."""
from os import PathLike
from typing import Dict, Iterator, List, Optional, Union

_Path = Union[str, PathLike]

__version__: str

class Which:
    """The model to load. Ids resolve as the CLI's: a local directory, else a Hugging Face
    repo in the local cache (then the Hub, when online)."""

    class Plain(Which):
        """A Hugging Face checkpoint (safetensors; GPTQ, AWQ, MLX, bitsandbytes and FP8
        checkpoints are detected from config.json)."""

        model_id: str
        dtype: Optional[str]
        topology: Optional[str]
        organization: Optional[str]
        imatrix: Optional[str]
        calibration_file: Optional[str]
        from_uqff: Optional[str]
        write_uqff: Optional[str]
        revision: Optional[str]
        def __init__(
            self,
            model_id: str,
            dtype: Optional[str] = None,
            topology: Optional[_Path] = None,
            organization: Optional[str] = None,
            imatrix: Optional[_Path] = None,
            calibration_file: Optional[_Path] = None,
            from_uqff: Optional[_Path] = None,
            write_uqff: Optional[_Path] = None,
            revision: Optional[str] = None,
        ) -> None:
            """`dtype`: f32 (default), f16 or bf16 for unquantized weights; `topology`: a
            YAML file of per-layer / per-weight ISQ types; `organization`: "default" or
            "moqe" (only MoE experts); `imatrix`: llama.cpp .dat or GGUF imatrix;
            `calibration_file`: text to collect an imatrix from (written to `imatrix` or
            ./imatrix.dat); `from_uqff` / `write_uqff`: UQFF files."""

    class GGUF(Which):
        """A GGUF file `quantized_filename` in the directory or repo `quantized_model_id`;
        `tok_model_id` takes the tokenizer.json of another model instead of the GGUF's."""

        quantized_model_id: str
        quantized_filename: str
        tok_model_id: Optional[str]
        topology: Optional[str]
        organization: Optional[str]
        imatrix: Optional[str]
        calibration_file: Optional[str]
        from_uqff: Optional[str]
        write_uqff: Optional[str]
        def __init__(
            self,
            quantized_model_id: str,
            quantized_filename: str,
            tok_model_id: Optional[str] = None,
            topology: Optional[_Path] = None,
            organization: Optional[str] = None,
            imatrix: Optional[_Path] = None,
            calibration_file: Optional[_Path] = None,
            from_uqff: Optional[_Path] = None,
            write_uqff: Optional[_Path] = None,
        ) -> None: ...

class ChatCompletionRequest:
    """A chat completion. `messages`: dicts with `role` (system, user, assistant, tool) and
    `content`. `temperature` defaults to 1 (0 is greedy). `stop_seqs` (or `stop`) ends the
    reply at any of the strings; `n_choices` (or `n`) replies are sampled. With
    `stream=True`, `send_chat_completion_request` returns a `ChatCompletionStream`."""

    messages: List[Dict[str, str]]
    model: Optional[str]
    max_tokens: Optional[int]
    temperature: Optional[float]
    top_p: Optional[float]
    top_k: Optional[int]
    min_p: Optional[float]
    stop_seqs: Optional[List[str]]
    seed: Optional[int]
    n_choices: int
    presence_penalty: Optional[float]
    frequency_penalty: Optional[float]
    repetition_penalty: Optional[float]
    logit_bias: Optional[Dict[int, float]]
    stream: bool
    def __init__(
        self,
        messages: List[Dict[str, str]],
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        min_p: Optional[float] = None,
        stop_seqs: Optional[List[str]] = None,
        stop: Optional[List[str]] = None,
        seed: Optional[int] = None,
        n_choices: int = 1,
        n: Optional[int] = None,
        presence_penalty: Optional[float] = None,
        frequency_penalty: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        stream: bool = False,
    ) -> None: ...

class CompletionRequest:
    """A raw-text completion of `prompt`; `echo_prompt` puts the prompt before the output."""

    prompt: str
    model: Optional[str]
    max_tokens: Optional[int]
    temperature: Optional[float]
    top_p: Optional[float]
    top_k: Optional[int]
    min_p: Optional[float]
    stop_seqs: Optional[List[str]]
    seed: Optional[int]
    n_choices: int
    presence_penalty: Optional[float]
    frequency_penalty: Optional[float]
    repetition_penalty: Optional[float]
    logit_bias: Optional[Dict[int, float]]
    echo_prompt: bool
    def __init__(
        self,
        prompt: str,
        model: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        min_p: Optional[float] = None,
        stop_seqs: Optional[List[str]] = None,
        stop: Optional[List[str]] = None,
        seed: Optional[int] = None,
        n_choices: int = 1,
        n: Optional[int] = None,
        presence_penalty: Optional[float] = None,
        frequency_penalty: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        echo_prompt: bool = False,
    ) -> None: ...

class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

class ResponseMessage:
    role: str
    content: Optional[str]

class Choice:
    index: int
    message: ResponseMessage
    finish_reason: str
    """`stop` or `length` (`cancelled` if the engine was stopped)."""

class ChatCompletionResponse:
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: List[Choice]
    usage: Usage

class Delta:
    role: Optional[str]
    content: Optional[str]

class ChunkChoice:
    index: int
    delta: Delta
    finish_reason: Optional[str]

class ChatCompletionChunk:
    id: str
    object: str
    created: int
    model: str
    choices: List[ChunkChoice]
    usage: Optional[Usage]
    """Set on the last chunk only."""

class ChatCompletionStream(Iterator[ChatCompletionChunk]):
    """The chunks of a streamed reply: the first carries `delta.role`, the last
    `finish_reason` and `usage`. Ctrl-C while iterating cancels the generation."""

    def __iter__(self) -> "ChatCompletionStream": ...
    def __next__(self) -> ChatCompletionChunk: ...

class CompletionChoice:
    index: int
    text: str
    finish_reason: str

class CompletionResponse:
    id: str
    object: str
    created: int
    model: str
    choices: List[CompletionChoice]
    usage: Usage

class Runner:
    """A loaded model behind the engine's continuous-batching scheduler; requests from
    several Python threads are decoded together, with the GIL released."""

    model_name: str
    context_length: int
    def __init__(
        self,
        which: Which,
        in_situ_quant: Optional[str] = None,
        max_seqs: int = 16,
        kv_cache_mb: int = 1024,
        max_queue: int = 1024,
        max_memory: Optional[str] = None,
        write_topology: Optional[str] = None,
    ) -> None:
        """Loads `which`, quantized in situ to `in_situ_quant` (Q4_0 … Q8_1, Q2K … Q8K,
        HQQ4, HQQ8, FP8, AFQ2 … AFQ8, MXFP4, or a bit width), or with `"auto"` to the
        per-weight mix of least measured error whose weights fit `max_memory` ("300MiB",
        "4GB", …); `write_topology` saves that mix as a topology file. Raises ValueError
        for an unknown type or a budget without "auto", FileNotFoundError for a missing
        model."""
    def send_chat_completion_request(
        self, request: ChatCompletionRequest
    ) -> Union[ChatCompletionResponse, ChatCompletionStream]: ...
    def send_completion_request(self, request: CompletionRequest) -> CompletionResponse: ...
    def send_re_isq(self, isq_type: Optional[str]) -> None:
        """Re-quantizes the loaded model to `isq_type` (None: back to the load dtype) once
        running requests have finished."""
    def tokenize(self, text: str, add_special: bool = False) -> List[int]: ...
    def detokenize(self, tokens: List[int]) -> str: ...
