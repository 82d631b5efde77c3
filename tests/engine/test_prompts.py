"""Requests -> prompt token ids: chat templates, the template-less transcript, refusals."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from engine.config import GenerateRequest
from engine.prompts import encode_request, render_chat


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_chat_template_renders_every_turn_and_the_generation_prompt(tok):
    text = render_chat((("system", "be brief"), ("user", "to be")), tok)
    assert text == "SYSTEM: be brief\nUSER: to be\nASSISTANT:"
    ids = encode_request(GenerateRequest(messages=(("user", "to be"),)), tok)
    assert tok.decode(ids) == "USER: to be\nASSISTANT:"


def test_without_a_template_a_plain_transcript(tok):
    saved, tok.chat_template = tok.chat_template, None
    try:
        assert render_chat((("user", "hi"), ("assistant", "ho")), tok) == "User: hi\nAssistant: ho\nAssistant:"
    finally:
        tok.chat_template = saved


def test_token_ids_pass_through_and_an_empty_prompt_is_refused(tok):
    assert encode_request(GenerateRequest(prompt_token_ids=(5, 6, 7)), tok) == [5, 6, 7]
    with pytest.raises(ValueError, match="empty"):
        encode_request(GenerateRequest(prompt=""), tok)
