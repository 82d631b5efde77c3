"""ui/chat_history.py: fitting a conversation into the context keeps the system prompt and the
newest turns, starts on a question, and never drops the question being asked."""

from __future__ import annotations

from ui.chat_history import TURN_OVERHEAD_TOKENS, estimate_tokens, fit_history, learn_chars_per_token


def _turns(n: int, size: int = 200):
    out = []
    for i in range(n):
        out.append(("user", f"q{i} " + "x" * size))
        out.append(("assistant", f"a{i} " + "y" * size))
    return out + [("user", "the new question")]


def test_everything_fits_nothing_is_dropped():
    fitted = fit_history("be brief", _turns(2, 10), context_tokens=4096, max_new_tokens=100)
    assert fitted.dropped == 0 and fitted.messages[0] == ("system", "be brief")
    assert len(fitted.messages) == 6


def test_the_oldest_turns_go_first_and_the_system_prompt_stays():
    turns = _turns(10)
    fitted = fit_history("you are hamlet", turns, context_tokens=512, max_new_tokens=2000, chars_per_token=4.0)
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0, "whole question/answer pairs"
    assert fitted.messages[0] == ("system", "you are hamlet")
    assert fitted.messages[1][0] == "user" and fitted.messages[-1] == ("user", "the new question")
    assert list(fitted.messages[1:]) == turns[fitted.dropped:]
    budget = (512 - 128) * 0.9  # an answer reserve of a quarter of the context, 10% margin
    assert fitted.estimated_tokens <= budget
    assert estimate_tokens(fitted.messages[:1] + tuple(turns[fitted.dropped - 2:]), 4.0) > budget


def test_a_question_too_long_on_its_own_is_still_sent():
    fitted = fit_history(None, [("user", "z" * 10_000)], context_tokens=256, max_new_tokens=10)
    assert fitted.messages == (("user", "z" * 10_000),) and fitted.dropped == 0


def test_the_ratio_is_learnt_from_the_engines_counts():
    messages = (("user", "x" * 400), ("assistant", "y" * 400))
    assert learn_chars_per_token(messages, 200 + 2 * TURN_OVERHEAD_TOKENS, None) == 4.0
    assert learn_chars_per_token(messages, 400 + 2 * TURN_OVERHEAD_TOKENS, 4.0) == 3.0
    assert learn_chars_per_token((("user", "hi"),), 5, 3.3) == 3.3  # too short to say anything
