"""OpenAI request bodies, validated strictly: every field is untrusted.

Wrong types, NaN/inf, negative or huge numbers, unsupported features: each ends in one
APIError (HTTP 400) naming the field, never in an exception inside the server. Pure: no
FastAPI, no engine thread; `to_sampling` turns a valid request into the engine's
SamplingParams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.config import MIN_TEMPERATURE, SamplingParams

MAX_TOKENS_LIMIT = 1 << 20  # beyond any context we can run; the engine also stops at the context end
MAX_N = 16
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_MESSAGES = 1024
MAX_PROMPTS = 64
MAX_MODEL_CHARS = 512
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
ROLES = ("system", "developer", "user", "assistant", "tool")


class APIError(Exception):
    """An error answered to the client as {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    # strict: "1" is not a number and true is not an integer; unknown fields are ignored
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class ContentPart(_Strict):
    type: str = Field(max_length=64)
    text: str | None = None

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v != "text":
            raise ValueError(f"content parts of type {v!r} are not supported; only 'text'")
        return v


class ChatMessage(_Strict):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class _Common(_Strict):
    model: str | None = Field(default=None, max_length=MAX_MODEL_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOKENS_LIMIT)  # vLLM's extension; -1 / 0 = off
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=256)
    ignore_eos: bool = False  # vLLM's extension (benchmark tools send it)
    return_token_ids: bool = False  # vLLM's extension: output token ids in each choice

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        for s in items:
            if not s or len(s) > MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return v

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def check_supported(self) -> None:
        """400 for features the engine cannot honour, rather than ignoring them."""
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value not in (None, 0, 0.0):
                raise APIError(400, f"{name} is not supported by this engine (use 0)", param=name)
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this engine", param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs or self.top_logprobs:
            param = "logprobs" if self.logprobs else "top_logprobs"
            raise APIError(400, "logprobs are not available from this engine", param=param)
        if self.tools:
            raise APIError(400, "tool calls are not supported by this engine", param="tools")
        if self.tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool calls are not supported by this engine", param="tool_choice")
        if self.response_format is not None and self.response_format.get("type", "text") != "text":
            raise APIError(400, "only the 'text' response format is supported", param="response_format")

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def message_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((m.role, m.text()) for m in self.messages)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs is not None:
            raise APIError(400, "logprobs are not available from this engine", param="logprobs")
        if self.echo:
            raise APIError(400, "echo is not supported by this engine", param="echo")
        if self.suffix:
            raise APIError(400, "suffix is not supported by this engine", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(400, "best_of different from n is not supported", param="best_of")

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def prompts(self, vocab_size: int) -> list[str | tuple[int, ...]]:
        """Each prompt as text or as token ids (checked against the vocabulary)."""
        p = self.prompt
        if isinstance(p, str):
            items: list = [p]
        elif not p:
            raise APIError(400, "prompt must not be empty", param="prompt")
        elif isinstance(p[0], int):
            items = [p]
        else:
            items = list(p)
        if len(items) > MAX_PROMPTS:
            raise APIError(400, f"at most {MAX_PROMPTS} prompts per request", param="prompt")
        out: list[str | tuple[int, ...]] = []
        for item in items:
            if isinstance(item, str):
                if not item:
                    raise APIError(400, "prompt must not be empty", param="prompt")
                out.append(item)
                continue
            if not item:
                raise APIError(400, "prompt must not be empty", param="prompt")
            if any(t < 0 or t >= vocab_size for t in item):
                raise APIError(400, f"prompt token ids must be in [0, {vocab_size})", param="prompt")
            out.append(tuple(item))
        return out


def parse(model: type[_Common], raw: bytes) -> _Common:
    """Validate a JSON body; any problem -> APIError(400) naming the first bad field."""
    try:
        request = model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # of a union's alternatives, the deepest error says most (e.g. a bad content part)
        first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
        loc = [str(x) for x in first.get("loc", ()) if not _is_union_tag(str(x))]
        param = ".".join(loc) or None
        if first.get("type") in ("json_invalid", "json_type"):
            raise APIError(400, "the request body is not a JSON object") from None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        raise APIError(400, f"{param}: {message}" if param else message, param=param) from None
    request.check_supported()
    return request


def _is_union_tag(segment: str) -> bool:
    """pydantic names a union's branch in the error location ('str', 'list[int]', ...)."""
    return "[" in segment or segment in ("str", "int", "float", "bool", "dict", "list")


@dataclass(frozen=True)
class Defaults:
    """What a field means when the client leaves it out (the model's generation config)."""

    sampling: SamplingParams
    max_tokens: int


def to_sampling(request: _Common, defaults: Defaults, choice_index: int) -> SamplingParams:
    """Engine sampling params for one choice. With a seed and n > 1, choice i uses seed + i so
    the choices differ and the whole response is still reproducible."""
    d = defaults.sampling
    temperature = d.temperature if request.temperature is None else request.temperature
    if temperature < MIN_TEMPERATURE:
        temperature = 0.0  # a vanishing temperature is greedy (dividing by it would overflow)
    top_p = d.top_p if request.top_p is None else request.top_p
    top_k = d.top_k if request.top_k is None else max(0, request.top_k)
    seed = None
    if request.seed is not None:
        seed = (request.seed + choice_index) % (2**63)  # the engine's seed range
    max_new = request.max_new_tokens() or defaults.max_tokens
    stop = d.stop if request.stop is None else request.stop_list()  # "stop": [] means none at all
    try:
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              max_new_tokens=max_new, stop=stop, ignore_eos=request.ignore_eos)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
