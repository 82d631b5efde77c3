"""Screenshot the Compare view: four columns (baseline, KV cache, speculative, nf4), one fair
comparison on a Shakespearean prompt, saved to docs/compare.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/compare_screenshot.py

Uses the bundled demo models (assets/models/target, assets/models/draft) when present, else
builds a tiny Llama in a temporary folder, teaches it a few Shakespeare lines for some seconds,
and uses a noisy one-layer copy as its draft. Prints the ratios it measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PROMPT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate:"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="target model dir (default: the bundled demo, else a tiny random model)")
    p.add_argument("--draft", help="draft model dir (default: the bundled draft when the target is bundled)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--chat", action="store_true", help="send the prompt as a chat message")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="docs/compare.png")
    p.add_argument("--report", default=None, help="also export the Markdown report here")
    p.add_argument("--theme", choices=["light", "dark"], default="light")
    p.add_argument("--size", default="1600x1000", help="window size WxH")
    p.add_argument("--timeout-s", type=float, default=300.0)
    return p.parse_args(argv)


def tiny_models(root: Path, *, steps: int = 300, seed: int = 0) -> tuple[str, str]:
    """A tiny Llama taught the test corpus's Shakespeare lines for a few seconds (so its text
    reads as verse), hidden 128 so nf4 can quantise it on CPU, and a noisy copy as its draft."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.helpers.tiny_models import CORPUS, build_llama, perturbed_copy

    target = build_llama(root / "tiny-target", layers=2, hidden=128)
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    lines = sorted(set(CORPUS))
    rng = random.Random(seed)
    stream: list[int] = []
    for _ in range(60):
        rng.shuffle(lines)
        for line in lines:
            stream += tok.encode(line + "\n")
    data = torch.tensor(stream)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    window, batch = 48, 32
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,))
        x = torch.stack([data[s: s + window] for s in starts.tolist()])  # [batch, window]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(target)
    print(f"trained the tiny target for {steps} steps (loss {loss.item():.2f})")
    draft = perturbed_copy(target, root / "tiny-draft", noise=0.1, layers=1)
    return str(target), str(draft)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    from app import paths
    from ui.compare_bridge import CompareBridge
    from ui.compare_view import CompareView
    from ui.qt_compat import apply_workarounds
    from ui.theme import ThemeManager, ThemeMode

    apply_workarounds()  # see ui/qt_compat.py
    model, draft = args.model, args.draft
    if model is None and paths.bundled_models_present():
        model = str(paths.bundled_target_dir())
        if draft is None and (paths.bundled_draft_dir() / "config.json").is_file():
            draft = str(paths.bundled_draft_dir())
    if model is None:
        model, draft = tiny_models(Path(tempfile.mkdtemp(prefix="workbench-compare-")))
        print("no bundled models: using a tiny Llama trained here")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ThemeManager(ThemeMode(args.theme)).apply()
    bridge = CompareBridge()
    view = CompareView(bridge, model, draft_model=draft)
    window = QMainWindow()
    window.setWindowTitle("Inference Workbench — Compare")
    window.setCentralWidget(view)
    w, h = (int(x) for x in args.size.lower().split("x"))
    window.resize(w, h)
    view.panels[2].preset_combo.setCurrentText("speculative")  # baseline, KV cache, speculative, nf4
    view.add_column("nf4")
    view.prompt_edit.setPlainText(args.prompt)
    view.chat_check.setChecked(args.chat)
    view.max_tokens_spin.setValue(args.max_tokens)
    view.repeats_spin.setValue(args.repeats)
    window.show()

    loop = QEventLoop()
    bridge.comparison_finished.connect(lambda _c: QTimer.singleShot(400, loop.quit))
    QTimer.singleShot(int(args.timeout_s * 1000), loop.quit)
    QTimer.singleShot(200, view.run)
    loop.exec()
    comp = view.comparison
    ok = comp is not None and comp.finished and not comp.cancelled
    app.processEvents()

    out = REPO_ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out))
    print(f"saved {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    if comp is not None:
        for row in comp.summary_rows():
            print(" | ".join(f"{row[k]}" for k in ("column", "tokens_per_s", "speed", "ttft_ratio", "tpot_ratio",
                                                      "memory_ratio", "acceptance", "agreement")))
        if args.report:
            Path(args.report).write_text(view.report_markdown(), encoding="utf-8")
    print(view.status.text())
    bridge.shutdown(5.0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
