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


def test_the_direct_decode_equals_the_wrappers_on_every_window(tok):
    """TextStream decodes through the `tokenizers` object when transformers' decode would only
    forward to it; every window it decodes must give the wrapper's text, special tokens and
    broken multi-byte sequences included."""
    import random

    stream = TextStream(tok)
    assert stream._backend is not None  # the fast tokenizer the tests build takes the direct path
    rng = random.Random(7)
    ids = tok.encode("ünïcödé ✓ 🎭 the king's men — and all") + [tok.eos_token_id]
    windows = [ids] + [[rng.randrange(len(tok)) for _ in range(rng.randrange(1, 6))] for _ in range(300)]
    for w in windows:
        assert stream.decode(w) == tok.decode(w, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_a_tokenizer_with_its_own_decode_keeps_it(tok):
    class Custom(type(tok)):
        def decode(self, *args, **kwargs):
            return "custom"

    custom = Custom.__new__(Custom)
    custom.__dict__.update(tok.__dict__)
    stream = TextStream(custom)
    assert stream._backend is None and stream.decode([5, 6]) == "custom"
