"""Bad command-line values end with exit code 2 and one clear line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    ("generate --prompt hi --max-new-tokens -1", "--max-new-tokens"),
    ("generate --prompt hi --max-new-tokens 0", "--max-new-tokens"),
    ("generate --prompt hi --temperature -1", "--temperature"),
    ("generate --prompt hi --temperature nan", "--temperature"),
    ("generate --prompt hi --top-p 1.5", "--top-p"),
    ("generate --prompt hi --top-k -3", "--top-k"),
    ("generate --prompt hi --k 0", "--k"),
    ("generate --prompt hi --k 64", "--k"),
    ("generate --prompt hi --seed 18446744073709551616", "--seed"),
    ("generate --prompt hi --stop=", "--stop"),
    ("loadtest --users 0", "--users"),
    ("loadtest --min-tokens 50 --max-tokens 10", "--min-tokens"),
    ("bench --device cuda", "cuda"),
    ("bench --suite kv --json /nonexistent-dir/out.json", "cannot write"),
]


@pytest.mark.parametrize("argv, needle", CASES)
def test_bad_values_exit_2_with_one_line(argv, needle):
    if "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "app", *argv.split()], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_generate_chat_with_a_broken_template_ends_with_its_error(tiny_llama_dir, tmp_path):
    """It used to wait forever for an answer that never came."""
    import json
    import shutil

    d = tmp_path / "broken-template"
    shutil.copytree(tiny_llama_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ raise_exception('this template refuses every conversation') }}"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "app", "generate", "--model", str(d), "--prompt", "hi", "--chat"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "could not build the prompt" in proc.stderr and "refuses every conversation" in proc.stderr
