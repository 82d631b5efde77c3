from __future__ import annotations

import pytest

from engine.stopping import TextStream


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_incremental_text_equals_full_decode(tok):
    text = "to be or not to be — that is the question: ünïcödé ✓ 🎭 done"
    ids = tok.encode(text)
    stream = TextStream(tok)
    out = "".join(stream.add([i])[0] for i in ids) + stream.flush()
    assert out == tok.decode(ids) == text


def test_stop_string_is_held_back_then_cut(tok):
    ids = tok.encode("the quick brown fox jumps")
    stream = TextStream(tok, stop=("fox",))
    shown = ""
    for i in ids:
        shown += stream.add([i])[0]
        assert "f" not in shown or "fox" not in shown
        if stream.stopped_by_string:
            break
    assert stream.stopped_by_string
    assert shown + stream.flush() == "the quick brown "
