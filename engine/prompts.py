"""Requests -> prompt token ids (chat templates via the tokenizer when it has one)."""

from __future__ import annotations

from engine.config import GenerateRequest


def render_chat(messages: tuple[tuple[str, str], ...], tokenizer) -> str:
    conversation = [{"role": role, "content": content} for role, content in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    # No template: a plain transcript that any base model can continue.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n".join(lines) + "\nAssistant:"


def encode_request(request: GenerateRequest, tokenizer) -> list[int]:
    if request.prompt_token_ids is not None:
        ids = list(request.prompt_token_ids)
    elif request.messages is not None:
        text = render_chat(request.messages, tokenizer)
        # the template already holds any BOS it wants
        ids = tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = tokenizer.encode(request.prompt)
    if not ids:
        raise ValueError("the prompt is empty")
    return ids
