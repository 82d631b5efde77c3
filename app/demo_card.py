"""Model card (README.md) for the demo model pair, rendered from metrics.json
and the training logs. Pure string building: no torch."""

from __future__ import annotations

import csv
from pathlib import Path

from app.demo_tokenizer import ASSISTANT_SPEAKER, BOS_TOKEN, CHAT_TEMPLATE, USER_SPEAKER

_SPARK = "▁▂▃▄▅▆▇█"


def file_sizes(out: Path) -> dict:
    """Parameters and bytes of each saved ``model.safetensors`` (read from its header)."""
    from safetensors import safe_open

    sizes = {}
    for name in ("target", "draft"):
        path = out / name / "model.safetensors"
        params = 0
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                shape = fh.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                params += count
        sizes[name] = {"params": params, "bytes": path.stat().st_size}
    sizes["total_bytes"] = sizes["target"]["bytes"] + sizes["draft"]["bytes"]
    return sizes


def read_curve(path: Path) -> list[tuple[int, float, float | None]]:
    """(step, training loss, dev loss or None) rows of a training log."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(int(row["step"]), float(row["loss"]), float(row["dev_loss"]) if row.get("dev_loss") else None)
                for row in csv.DictReader(fh)]


def sparkline(values: list[float], width: int = 48) -> str:
    if not values:
        return ""
    n = min(width, len(values))
    buckets = [values[i * len(values) // n : (i + 1) * len(values) // n] for i in range(n)]
    means = [sum(b) / len(b) for b in buckets]
    lo, hi = min(means), max(means)
    span = (hi - lo) or 1.0
    return "".join(_SPARK[int((m - lo) / span * (len(_SPARK) - 1))] for m in means)


def curve_table(curve: list[tuple[int, float, float | None]], rows: int = 10) -> list[str]:
    """A few rows of the log, preferring those with a dev loss."""
    if not curve:
        return ["(no log)"]
    pool = [row for row in curve if row[2] is not None] or curve
    picks = sorted({pool[round(i * (len(pool) - 1) / max(rows - 1, 1))] for i in range(rows)})
    table = ["| step | training loss | dev loss |", "|---:|---:|---:|"]
    return table + [f"| {step} | {loss:.3f} | {'' if dev is None else f'{dev:.3f}'} |" for step, loss, dev in picks]


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def _machine(m: dict) -> str:
    text = f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPU cores, torch threads {m.get('torch_threads', '?')}"
    if m.get("gpu"):
        text = f"{m['gpu']} (host: {text})"
    return f"{text}; torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}"


def _load_note(ev: dict) -> str:
    others = ev["decode_timing"].get("other_programs_cpu_cores")
    if others is None or ev["machine"].get("device") != "cpu":
        return ""
    note = f" Other programs kept {others:.2f} cores busy meanwhile"
    if others > 0.25:
        note += " (the times are inflated: re-measure on an idle machine)"
    return note + "."


def render(metrics: dict, out: Path) -> str:
    tr, ev, files = metrics["training"], metrics["eval"], metrics["files"]
    corpus, acc = tr["corpus"], ev["acceptance"]
    lines = [
        "---",
        "license: mit",
        "language: en",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [llama, speculative-decoding, draft-model, shakespeare, demo]",
        "---",
        "",
        "# Inference Workbench demo pair: target + draft (Shakespeare dialogue)",
        "",
        "Two small `LlamaForCausalLM` models sharing one tokenizer, made for the workbench's demos of KV cache,",
        "batching, quantisation and speculative decoding. `target/` is the model you chat with; `draft/` is a",
        "much cheaper model distilled from it to propose tokens for speculative decoding. Both load like hub",
        "models: `AutoModelForCausalLM.from_pretrained(\"<dir>/target\")`, `AutoTokenizer.from_pretrained(...)`.",
        "They write Shakespeare-flavoured dialogue; they know nothing of the world and are not assistants.",
        "",
        "## Provenance",
        "",
        f"- Text: {corpus['source']}. The markdown plays shipped in the package are converted to the",
        "  tiny-shakespeare layout (`SPEAKER:` line, verse lines, blank line): speaker names upper-cased,",
        "  title/act/scene headers dropped, stand-alone stage directions kept as one `[...]` line,",
        "  directions inside speeches dropped, markdown markup and trailing spaces removed.",
        f"- Split by whole plays: {len(corpus['train_plays'])} plays train ({corpus['train_chars']:,} characters,"
        f" {corpus['train_tokens']:,} tokens); held out for evaluation: **{', '.join(corpus['held_out_plays'])}**"
        f" ({corpus['held_out_chars']:,} characters); watched during training for early stopping only:"
        f" {', '.join(corpus.get('dev_plays', [])) or 'none'}.",
        f"- Made by: `{tr['command']}` (seed {tr['seed']}, profile `{tr['profile']}`),"
        f" trained on {_machine(tr['machine'])}.",
        "",
        "## Tokenizer and chat template",
        "",
        f"Byte-level BPE trained on the training plays only, {tr['tokenizer']['vocab_size']} tokens"
        f" (model vocabulary {tr['tokenizer']['model_vocab_size']}); `<|endoftext|>` is BOS/EOS and separates plays,"
        " `<|pad|>` pads. It round-trips any text exactly. The chat template writes a conversation as a scene:",
        f"a system message becomes a stage direction `[...]`, user turns are spoken by {USER_SPEAKER} (or the",
        f"message's `name`), assistant turns by {ASSISTANT_SPEAKER}, and the generation prompt is"
        f" `{ASSISTANT_SPEAKER}:\\n`. `generation_config.json` samples (temperature 0.8, top-k 50, up to 200 tokens)",
        "and stops at the end of a speech (`stop_strings: [\"\\n\\n\"]`, needs `tokenizer=` in `generate`).",
        "",
        "```jinja",
        CHAT_TEMPLATE,
        "```",
        "",
        "## Architecture and size",
        "",
        "| | layers | hidden | MLP | heads | parameters | `model.safetensors` (float16) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("target", "draft"):
        shape = tr[name]["shape"]
        lines.append(f"| {name} | {shape['layers']} | {shape['hidden']} | {shape['intermediate']} | {shape['heads']}"
                     f" | {files[name]['params'] / 1e6:.2f} M | {_mb(files[name]['bytes'])} |")
    lines += [
        "",
        f"Together {_mb(files['total_bytes'])}. Tied input/output embeddings, RoPE, 1024 positions"
        f" (trained on {tr['target']['context']}-token windows), every Linear input a multiple of 64"
        " (bitsandbytes 4-bit works on CPU).",
        "",
        "## Training",
        "",
    ]
    for name in ("target", "draft"):
        run = tr[name]
        how = ("next-token cross-entropy" if name == "target"
               else f"distillation, {run.get('distillation', 'KL(target || draft)')}")
        stop = {"time": "stopped by the time budget", "steps": "ran all planned steps"}.get(
            run.get("stop_reason", ""), run.get("stop_reason", ""))
        kept = (f"; kept the weights of step {run['kept_step']} (lowest dev loss {run['best_dev_loss']:.3f})"
                if run.get("best_dev_loss") is not None else "")
        curve = read_curve(out / f"train_log_{name}.csv")
        lines += [
            f"**{name}**: {how}; AdamW (betas 0.9/0.95, weight decay 0.1), peak lr {run['lr']:g}, warm-up"
            f" {run['warmup_steps']} steps, cosine to lr/10; batch {run['batch']} x {run['context']} tokens;"
            f" {run['steps_done']}/{run['steps_planned']} steps ({stop}){kept}; {run['tokens_seen']:,} tokens,"
            f" {run['seconds']:.0f} s ({run['seconds_per_step']:.2f} s/step). Log: `train_log_{name}.csv`.",
            "",
            f"Training loss: `{sparkline([row[1] for row in curve])}`",
            "",
            *curve_table(curve),
            "",
        ]
    t, d = ev["target"], ev["draft"]
    lines += [
        "## Held-out figures",
        "",
        f"Measured by `{ev.get('command', tr['command'])}` on {_machine(ev['machine'])}"
        f" (device `{ev['machine']['device']}`).",
        "",
        "| | bits per character | nats per token | decode step, median (p10-p90) |",
        "|---|---:|---:|---:|",
    ]
    for name, fig in (("target", t), ("draft", d)):
        step = fig["decode_step"]
        lines.append(f"| {name} | {fig['bits_per_char']:.3f} | {fig['nats_per_token']:.3f} |"
                     f" {step['median_ms']:.2f} ms ({step['p10_ms']:.2f}-{step['p90_ms']:.2f}) |")
    per_pos = ", ".join(f"{p:.2f}" for p in acc["acceptance_per_position"])
    lines += [
        "",
        f"- Bits per character: summed token NLL over all {t['num_tokens']:,} held-out tokens"
        f" ({t['num_chars']:,} characters) / characters / ln 2; windows of {ev['settings']['bpc_window']} tokens"
        f" with {ev['settings']['bpc_overlap']} tokens of carried context, each play starting after `<|endoftext|>`.",
        f"- Decode step: one token, batch 1, KV cache, float32, {ev['decode_timing']['context_tokens']} tokens of"
        f" context, median of {t['decode_step']['num_steps']} steps."
        f" Target / draft = **{ev['decode_step_ratio']:.1f}x**.{_load_note(ev)}",
        f"- Greedy speculative acceptance at k={acc['draft_k']}: **{acc['acceptance_rate']:.3f}**"
        f" ({acc['accepted_tokens']}/{acc['draft_tokens']} draft tokens) over {acc['num_prompts']} held-out prompts"
        f" of {acc['prompt_tokens']} tokens, {acc['new_tokens']} new tokens each; {acc['mean_tokens_per_verify']:.2f}"
        f" tokens per verify step; share of verify steps that accept draft token 1..{acc['draft_k']}: {per_pos}."
        f" The draft proposes {acc['draft_k']} greedy"
        " tokens, the target keeps the longest prefix equal to its own greedy choices and adds one token.",
        f"- Evaluation took {ev['eval_s']:.0f} s. Re-measure on your machine:"
        " `workbench train-demo --eval-only <dir>` (rewrites `metrics.json` and this card).",
        "",
        "## Samples (target, through the chat template)",
        "",
    ]
    for i, sample in enumerate(ev["samples"], 1):
        shown = sample["prompt"].removeprefix(BOS_TOKEN) + sample["reply"]
        lines += [f"**{i}. {sample['mode']}**", "", "```text", shown, "```", ""]
    lines += [
        "## Limitations",
        "",
        "Tiny models trained for minutes: the verse scans and the speakers take turns, but meaning drifts within",
        "a few lines. Quality falls off past the training window length. Weights are stored in float16; load",
        "them in float32 on CPUs without fast half-precision kernels.",
        "",
    ]
    return "\n".join(lines)
