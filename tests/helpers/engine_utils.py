"""Driving an Engine from tests: collect events until every request has ended."""

from __future__ import annotations

import queue
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from engine import events as ev
from engine.config import EngineConfig, GenerateRequest, SamplingParams
from engine.engine import Engine

TIMEOUT_S = 60.0


@dataclass
class Collected:
    finished: dict[str, ev.RequestFinished] = field(default_factory=dict)
    terminal_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[str, list[ev.TokensGenerated]] = field(default_factory=lambda: defaultdict(list))
    steps: list[ev.StepStats] = field(default_factory=list)
    errors: list[ev.EngineErrorEvent] = field(default_factory=list)
    applied: list[ev.ConfigApplied] = field(default_factory=list)
    loaded: list[ev.ModelInfo] = field(default_factory=list)
    other: list[ev.EngineEvent] = field(default_factory=list)

    def record(self, event: ev.EngineEvent) -> None:
        if isinstance(event, ev.RequestFinished):
            self.finished[event.request_id] = event
            self.terminal_counts[event.request_id] += 1
        elif isinstance(event, ev.TokensGenerated):
            self.tokens[event.request_id].append(event)
        elif isinstance(event, ev.StepCompleted):
            self.steps.append(event.stats)
        elif isinstance(event, ev.EngineErrorEvent):
            self.errors.append(event)
        elif isinstance(event, ev.ConfigApplied):
            self.applied.append(event)
        elif isinstance(event, ev.ModelLoaded):
            self.loaded.append(event.info)
        else:
            self.other.append(event)


def pump(engine: Engine, collected: Collected, until, timeout: float = TIMEOUT_S) -> Collected:
    """Read events (blocking on the queue, no sleeps) until until(collected) is true."""
    import time

    deadline = time.monotonic() + timeout
    while not until(collected):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("engine did not reach the expected state in time")
        try:
            collected.record(engine.events.get(timeout=remaining))
        except queue.Empty:
            continue
    return collected


def wait_finished(engine: Engine, ids: list[str], collected: Collected | None = None) -> Collected:
    c = collected or Collected()
    return pump(engine, c, lambda c: all(i in c.finished for i in ids))


def wait_loaded(engine: Engine, collected: Collected | None = None) -> Collected:
    c = collected or Collected()
    return pump(engine, c, lambda c: bool(c.loaded) or bool(c.errors))


def engine_greedy(spec, config: EngineConfig, prompts: dict[str, list[int]], max_new_tokens: int) -> dict[str, list[int]]:
    """Greedy tokens (EOS ignored) of a fresh engine for each prompt, all submitted at once."""
    eng = Engine(spec, config).start()
    try:
        wait_loaded(eng)
        ids = {eng.submit(GenerateRequest(prompt_token_ids=tuple(p), sampling=greedy(max_new_tokens, ignore_eos=True))): key
               for key, p in prompts.items()}
        c = wait_finished(eng, list(ids))
        return {key: list(c.finished[rid].token_ids) for rid, key in ids.items()}
    finally:
        assert eng.shutdown(10.0)


def greedy(max_new_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, **kw)


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, pad_id: int) -> list[int]:
    """Reference: transformers generate(), greedy, EOS ignored."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=None,
        )
    return out[0, len(prompt_ids):].tolist()


def started_engine(model_dir, config: EngineConfig | None = None) -> tuple[Engine, Collected]:
    engine = Engine(str(model_dir), config or EngineConfig()).start()
    c = wait_loaded(engine)
    assert c.loaded, f"model failed to load: {[e.message for e in c.errors]}"
    return engine, c


def run_requests(engine: Engine, requests: list[GenerateRequest]) -> tuple[list[str], Collected]:
    ids = [engine.submit(r) for r in requests]
    return ids, wait_finished(engine, ids)
