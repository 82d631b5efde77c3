"""Fit a conversation into the model's context, as chat apps do: keep the system prompt and the
newest turns, leave out the oldest. Pure (no Qt, no tokenizer): the token count is estimated
from characters, with a characters-per-token ratio the chat view learns from the engine's
own prompt token counts."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHARS_PER_TOKEN = 2.5  # conservative for byte-level BPE on prose (usually 3.5-4.5)
TURN_OVERHEAD_TOKENS = 6  # chat-template markup per message (role names, separators)
SAFETY = 0.9  # use at most this share of the room the estimate says there is


@dataclass(frozen=True)
class FittedHistory:
    messages: tuple[tuple[str, str], ...]
    dropped: int  # earliest messages left out
    estimated_tokens: int


def estimate_tokens(messages, chars_per_token: float) -> int:
    cpt = max(0.5, chars_per_token)
    return sum(int(len(content) / cpt) + TURN_OVERHEAD_TOKENS for _role, content in messages)


def answer_reserve(context_tokens: int, max_new_tokens: int) -> int:
    """Room kept for the answer: what was asked for, but at most a quarter of the context."""
    return max(1, min(max_new_tokens, max(16, context_tokens // 4)))


def fit_history(system: str | None, turns: list[tuple[str, str]], *, context_tokens: int | None,
                max_new_tokens: int, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> FittedHistory:
    """turns: (role, content) oldest first, the last one the new question. Drops whole messages
    from the start (an answer is never left without its question) and never the last one."""
    head = (("system", system),) if system else ()
    body = list(turns)
    if not context_tokens:
        return FittedHistory(head + tuple(body), 0, estimate_tokens(head + tuple(body), chars_per_token))
    budget = int((context_tokens - answer_reserve(context_tokens, max_new_tokens)) * SAFETY)
    dropped = 0
    while len(body) > 1 and estimate_tokens(head + tuple(body), chars_per_token) > budget:
        body.pop(0)
        dropped += 1
        while len(body) > 1 and body[0][0] != "user":  # start on a question
            body.pop(0)
            dropped += 1
    messages = head + tuple(body)
    return FittedHistory(messages, dropped, estimate_tokens(messages, chars_per_token))


def learn_chars_per_token(messages, prompt_tokens: int, previous: float | None) -> float | None:
    """Update the ratio from a prompt the engine counted (smoothed; short prompts say too little)."""
    chars = sum(len(content) for _role, content in messages)
    text_tokens = prompt_tokens - TURN_OVERHEAD_TOKENS * len(messages)
    if chars < 200 or text_tokens <= 0:
        return previous
    observed = chars / text_tokens
    return observed if previous is None else 0.5 * previous + 0.5 * observed
