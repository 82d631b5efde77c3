"""`workbench generate`: one request through the engine, streamed to stdout."""

from __future__ import annotations

import argparse
import json
import queue
import sys

from app.cli import default_draft, default_model
from app.cli_types import check_device, fail
from engine import events as ev
from engine.config import (
    DeviceKind,
    DType,
    EngineConfig,
    GenerateRequest,
    KVCacheMode,
    ModelSpec,
    Quantisation,
    SamplingParams,
    SpeculativeConfig,
    SpeculativeMode,
)
from engine.engine import Engine
from engine.generation_defaults import generation_defaults


def _sampling(args: argparse.Namespace, model_dir: str | None) -> SamplingParams:
    # a remote model (model_dir None) has no local generation_config.json to read
    d = generation_defaults(model_dir) if model_dir else SamplingParams()
    stop = tuple(args.stop) if args.stop is not None else d.stop
    return SamplingParams(
        temperature=d.temperature if args.temperature is None else args.temperature,
        top_k=d.top_k if args.top_k is None else args.top_k,
        top_p=d.top_p if args.top_p is None else args.top_p,
        seed=args.seed,
        max_new_tokens=d.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        stop=stop,
    )


def run_generate(args: argparse.Namespace) -> int:
    if getattr(args, "backend", None) or getattr(args, "launch", None):
        return _run_remote(args)
    model = default_model(args.model)
    check_device("workbench generate", args.device)
    try:
        _sampling(args, model)  # refuse bad sampling values before loading anything
    except ValueError as exc:
        fail("workbench generate", str(exc))
    spec_mode = SpeculativeMode(args.speculative)
    draft = default_draft(args.draft) if spec_mode is SpeculativeMode.DRAFT else None
    config = EngineConfig(
        kv_cache=KVCacheMode.OFF if args.no_kv_cache else KVCacheMode.ON,
        quantisation=Quantisation(args.quantisation),
        speculative=SpeculativeConfig(mode=spec_mode, num_draft_tokens=args.k, adaptive=args.adaptive,
                                      draft_model=draft),
    )
    spec = ModelSpec(model, device=DeviceKind(args.device), dtype=DType(args.dtype),
                     trust_remote_code=args.trust_remote_code)
    engine = Engine(spec, config).start()
    try:
        return _stream(engine, args, model)
    finally:
        engine.shutdown()


def _run_remote(args: argparse.Namespace) -> int:
    from app.remote_cli import launched, open_backend

    try:
        _sampling(args, None)
    except ValueError as exc:
        fail("workbench generate", str(exc))
    with launched("workbench generate", args):
        backend = open_backend("workbench generate", args, metrics_interval_s=0)
        try:
            return _stream(backend, args, None)
        finally:
            backend.shutdown()


def _stream(engine: Engine, args: argparse.Namespace, model: str | None) -> int:
    rid = None
    while True:
        event = engine.events.get()
        if isinstance(event, ev.EngineErrorEvent):
            print(f"error: {event.message}", file=sys.stderr)
            if event.where == "load" or rid is None and event.where == "config":
                return 1
        elif isinstance(event, ev.ModelLoaded) and rid is None:
            sampling = _sampling(args, model)
            if args.chat:
                request = GenerateRequest(messages=(("user", args.prompt),), sampling=sampling)
            else:
                request = GenerateRequest(prompt=args.prompt, sampling=sampling)
            rid = engine.submit(request)
        elif isinstance(event, ev.TokensGenerated) and event.request_id == rid:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ev.RequestFinished) and event.request_id == rid:
            sys.stdout.write("\n")
            _print_metrics(event, as_json=args.json)
            return 0 if event.reason is not ev.FinishReason.ERROR else 1


def _fmt(x: float | None, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x * scale:.{digits}f}{unit}"


def _print_metrics(fin: ev.RequestFinished, as_json: bool) -> None:
    s = fin.stats
    if as_json:
        print(json.dumps({
            "finish_reason": fin.reason.value, "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "ttft_s": s.ttft_s, "tpot_s": s.tpot_s,
            "e2e_s": s.e2e_s, "tokens_per_s": s.tokens_per_s, "prefill_tokens_per_s": s.prefill_tokens_per_s,
            "acceptance_rate": s.spec.acceptance_rate, "config": fin.config_label,
        }), file=sys.stderr)
        return
    line = (f"[{fin.reason.value}] {s.completion_tokens} tokens · {_fmt(s.tokens_per_s, ' tok/s')} · "
            f"TTFT {_fmt(s.ttft_s, ' ms', 1000)} · TPOT {_fmt(s.tpot_s, ' ms', 1000)} · "
            f"prompt {s.prompt_tokens} tok ({_fmt(s.prefill_tokens_per_s, ' tok/s')})")
    if s.spec.acceptance_rate is not None:
        line += f" · acceptance {s.spec.acceptance_rate:.0%}"
    print(line + f" · {fin.config_label}", file=sys.stderr)
    if fin.error:
        print(f"error: {fin.error}", file=sys.stderr)
