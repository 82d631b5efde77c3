"""`workbench` command line: the GUI, headless generation, benchmarks, the demo recipe."""

from __future__ import annotations

import argparse
import os
import sys

from app import paths
from app.remote_cli import add_backend_args
from app.cli_types import OneLineParser, float_range, int_range, non_empty


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="local model directory or hub id (default: the bundled demo target)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow custom model code from the model's repository (off by default)")


def default_model(name: str | None) -> str:
    if name:
        return name
    if not paths.bundled_models_present():
        raise SystemExit("No --model given and the bundled demo model is missing "
                         "(assets/models/target). Train it with `workbench train-demo`.")
    return str(paths.bundled_target_dir())


def default_draft(name: str | None) -> str | None:
    if name:
        return name
    d = paths.bundled_draft_dir()
    return str(d) if (d / "config.json").is_file() else None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="workbench",
        description="Inference Workbench: see what KV caching, batching, quantisation and "
                    "speculative decoding do to your model. With no subcommand, opens the app.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    gui = sub.add_parser("gui", help="open the desktop app (the default)")
    gui.add_argument("--model", default=None, help="model to load at start (default: last used / bundled)")
    gui.add_argument("--draft", default=None, help="draft model for speculative decoding")

    gen = sub.add_parser("generate", help="stream a completion to stdout and print its metrics")
    _add_model_args(gen)
    add_backend_args(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--chat", action="store_true",
                     help="send the prompt as a user chat message through the model's chat template")
    gen.add_argument("--max-new-tokens", type=int_range(1, 1_000_000), default=None)
    gen.add_argument("--temperature", type=float_range(0.0, 100.0), default=None,
                     help="0 = greedy (default: model's config)")
    gen.add_argument("--top-k", type=int_range(0), default=None, help="0 = off")
    gen.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=None)
    gen.add_argument("--seed", type=int_range(0, 2**63 - 1), default=None)
    gen.add_argument("--stop", action="append", type=non_empty, default=None, help="stop string (repeatable)")
    gen.add_argument("--no-kv-cache", action="store_true", help="recompute the whole sequence every step")
    gen.add_argument("--quantisation", choices=["none", "bf16", "int8", "nf4", "fp4"], default="none")
    gen.add_argument("--speculative", choices=["off", "draft", "ngram"], default="off")
    gen.add_argument("--draft", default=None, help="draft model (default: the bundled draft)")
    gen.add_argument("--k", type=int_range(1, 16), default=4, help="draft tokens per step (1-16)")
    gen.add_argument("--adaptive", action="store_true", help="adapt k to the acceptance rate")
    gen.add_argument("--json", action="store_true", help="print the metrics as JSON")

    bench = sub.add_parser("bench", help="benchmark the engine against its peers (no GUI)")
    _add_model_args(bench)
    add_backend_args(bench)
    from app import bench_cli

    bench_cli.add_arguments(bench)

    load = sub.add_parser("loadtest", help="simulated users against the engine, live figures (no GUI)")
    _add_model_args(load)
    add_backend_args(load)
    from app import loadtest_cli

    loadtest_cli.add_arguments(load)

    serve = sub.add_parser("serve", help="serve the engine over an OpenAI-compatible HTTP API (no GUI)")
    _add_model_args(serve)
    from app import serve_cli

    serve_cli.add_arguments(serve)

    tune = sub.add_parser("tune", help="sweep settings on this machine: Pareto front and a recommendation")
    _add_model_args(tune)
    from app import tune_cli

    tune_cli.add_arguments(tune)

    train = sub.add_parser("train-demo", help="reproduce the bundled demo model pair")
    try:
        from app import train_demo

        train_demo.add_arguments(train)
    except ImportError:  # the recipe module is optional at runtime
        train.set_defaults(_missing_train=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "gui"):
        from app.gui import run_gui

        return run_gui(model=getattr(args, "model", None), draft=getattr(args, "draft", None))
    if args.command == "generate":
        from app.generate_cli import run_generate

        return run_generate(args)
    if args.command == "bench":
        from app import bench_cli

        return bench_cli.run(args)
    if args.command == "loadtest":
        from app import loadtest_cli

        return loadtest_cli.run(args)
    if args.command == "serve":
        from app import serve_cli

        return serve_cli.run(args)
    if args.command == "tune":
        from app import tune_cli

        return tune_cli.run(args)
    if args.command == "train-demo":
        if getattr(args, "_missing_train", False):
            print("the demo recipe is not available in this install", file=sys.stderr)
            return 2
        from app import train_demo

        return train_demo.run(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
