"""app/serve/openai_schema.py: request bodies -> engine sampling (pure, no server)."""

from __future__ import annotations

import pytest

from app.serve.openai_schema import (APIError, ChatCompletionRequest, CompletionRequest, Defaults, parse,
                                     to_sampling)
from engine.config import SamplingParams

MODEL_DEFAULTS = Defaults(sampling=SamplingParams(temperature=0.8, top_k=50, stop=("\n\n",)), max_tokens=512)


def chat(**fields) -> ChatCompletionRequest:
    import json

    return parse(ChatCompletionRequest, json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}))


def test_absent_fields_take_the_models_defaults():
    sp = to_sampling(chat(), MODEL_DEFAULTS, 0)
    assert (sp.temperature, sp.top_k, sp.top_p, sp.stop, sp.max_new_tokens) == (0.8, 50, 1.0, ("\n\n",), 512)
    sp = to_sampling(chat(temperature=0, stop=[], max_tokens=7, top_k=-1), MODEL_DEFAULTS, 0)
    assert (sp.temperature, sp.top_k, sp.stop, sp.max_new_tokens) == (0.0, 0, (), 7)
    assert to_sampling(chat(stop="END"), MODEL_DEFAULTS, 0).stop == ("END",)
    assert to_sampling(chat(max_tokens=3, max_completion_tokens=9), MODEL_DEFAULTS, 0).max_new_tokens == 9


def test_seeds_per_choice_and_vanishing_temperatures():
    assert [to_sampling(chat(seed=5, n=3), MODEL_DEFAULTS, i).seed for i in range(3)] == [5, 6, 7]
    assert to_sampling(chat(seed=-1), MODEL_DEFAULTS, 0).seed == 2**63 - 1  # into the engine's range
    assert to_sampling(chat(temperature=1e-9), MODEL_DEFAULTS, 0).greedy


def test_errors_name_the_deepest_bad_field():
    with pytest.raises(APIError) as info:
        parse(ChatCompletionRequest, b'{"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}')
    assert info.value.param == "messages.0.content.0.type" and "input_audio" in info.value.message
    with pytest.raises(APIError) as info:
        parse(ChatCompletionRequest, b'{"messages": [{"role": "user", "content": "x"}], "stream": 1}')
    assert info.value.param == "stream" and info.value.status == 400


def test_completion_prompts_in_every_shape():
    def prompts(p):
        return parse(CompletionRequest, __import__("json").dumps({"prompt": p})).prompts(vocab_size=100)

    assert prompts("a b") == ["a b"]
    assert prompts(["a", "b"]) == ["a", "b"]
    assert prompts([1, 2]) == [(1, 2)]
    assert prompts([[1], [2, 3]]) == [(1,), (2, 3)]
    for bad in ([], [[]], [100], [[1], [-1]], [""]):
        with pytest.raises(APIError):
            prompts(bad)
