"""`workbench serve`: the engine behind an OpenAI-compatible HTTP API, until Ctrl+C."""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading

from app.cli_types import check_device, fail, int_range, non_empty

API_KEY_ENV = "WORKBENCH_API_KEY"
_STOP = object()  # put on the event queue by Ctrl+C / SIGTERM
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int_range(0, 65535), default=8000, help="port (0 = any free port)")
    p.add_argument("--api-key", type=non_empty, default=None,
                   help=f"require this bearer token on /v1 requests (default: ${API_KEY_ENV} if set)")
    p.add_argument("--served-model-name", type=non_empty, default=None,
                   help="model id clients use (default: the model directory's name)")
    p.add_argument("--default-max-tokens", type=int_range(1, 1 << 20), default=512,
                   help="tokens to generate when a request gives no max_tokens")
    p.add_argument("--max-queued", type=int_range(1, 100_000), default=256,
                   help="engine requests in flight before new ones get HTTP 429")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole sequence every step")
    p.add_argument("--no-batching", action="store_true", help="one request at a time")
    p.add_argument("--max-batch", type=int_range(1, 256), default=8, help="largest batch of one step")
    p.add_argument("--quantisation", choices=["none", "bf16", "int8", "nf4", "fp4"], default="none")
    p.add_argument("--speculative", choices=["off", "draft", "ngram"], default="off")
    p.add_argument("--draft", default=None, help="draft model (default: the bundled draft)")
    p.add_argument("--k", type=int_range(1, 16), default=4, help="draft tokens per step")
    p.add_argument("--adaptive", action="store_true", help="adapt k to the acceptance rate")


def engine_config(args: argparse.Namespace):
    from app.cli import default_draft
    from engine.config import (BatchingConfig, EngineConfig, KVCacheMode, Quantisation, SpeculativeConfig,
                               SpeculativeMode)

    spec_mode = SpeculativeMode(args.speculative)
    draft = default_draft(args.draft) if spec_mode is SpeculativeMode.DRAFT else None
    return EngineConfig(
        kv_cache=KVCacheMode.OFF if args.no_kv_cache else KVCacheMode.ON,
        batching=BatchingConfig(enabled=not args.no_batching, max_batch_size=args.max_batch),
        quantisation=Quantisation(args.quantisation),
        speculative=SpeculativeConfig(mode=spec_mode, num_draft_tokens=args.k, adaptive=args.adaptive,
                                      draft_model=draft),
    )


def run(args: argparse.Namespace) -> int:
    prog = "workbench serve"
    check_device(prog, args.device)
    try:
        from app.serve.runner import ServerThread
        from app.serve.session import ServeSession
    except ImportError as exc:
        fail(prog, f"the server needs the 'serve' extra (pip install -e '.[serve]'): {exc}")
    from app.cli import default_model
    from engine import events as ev
    from engine.config import DeviceKind, DType, ModelSpec
    from engine.engine import Engine
    from engine.event_hub import EventHub

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    spec = ModelSpec(default_model(args.model), device=DeviceKind(args.device), dtype=DType(args.dtype),
                     trust_remote_code=args.trust_remote_code)
    engine = Engine(spec, engine_config(args))
    hub = EventHub(engine.events)
    loads: queue.Queue = queue.Queue()
    hub.add_listener(lambda e: loads.put(e) if isinstance(e, (ev.ModelLoaded, ev.EngineErrorEvent)) else None)
    session = ServeSession(engine, hub, config=engine.config, served_model_name=args.served_model_name,
                           default_max_tokens=args.default_max_tokens, max_pending=args.max_queued,
                           api_key=api_key)
    try:
        server = ServerThread(session, args.host, args.port)  # binds now: a busy port fails before the load
    except OSError as exc:
        fail(prog, f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")

    def on_signal(*_) -> None:
        # the handler runs on the main thread, maybe inside loads.get() holding the queue's lock:
        # put from another thread, never from here
        threading.Thread(target=loads.put, args=(_STOP,), daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    hub.start()
    engine.start()
    server.start()
    try:
        print(f"loading {spec.name_or_path} …", file=sys.stderr, flush=True)
        while True:
            event = loads.get()
            if event is _STOP:
                return 0
            if isinstance(event, ev.ModelLoaded):
                break
            print(f"error: {event.message}", file=sys.stderr, flush=True)
            if event.where == ev.ErrorSite.LOAD:
                return 1
        if args.host not in LOOPBACK and not api_key:
            print(f"warning: listening on {args.host} with no --api-key: anyone who can reach this machine "
                  "can use the model", file=sys.stderr)
        print(f"serving {session.model_id} on {server.url}/v1  (metrics: {server.url}/metrics; "
              f"{engine.config.describe()}; Ctrl+C stops)", flush=True)
        # until Ctrl+C: say each engine error (a refused draft, a failed step) as it happens
        while (event := loads.get()) is not _STOP:
            if isinstance(event, ev.EngineErrorEvent):
                print(f"engine error ({event.where.value}): {event.message}", file=sys.stderr, flush=True)
        print("stopping …", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()
        engine.shutdown()
        hub.stop()
