"""What the step timeline is built from: per-step phases and per-request activity, from scripted
runs of the core on this thread (nothing moves while we look)."""

from __future__ import annotations

import time

import pytest
import torch

from engine.config import BatchingConfig, EngineConfig, GenerateRequest, ModelSpec, SpeculativeConfig, SpeculativeMode
from engine.core import EngineCore
from engine.events import FinishReason, RequestFinished, StepCompleted
from tests.helpers.engine_utils import greedy


@pytest.fixture()
def core(tiny_llama_dir):
    events = []
    c = EngineCore(events.append, EngineConfig(batching=BatchingConfig(max_batch_size=4, token_budget=16)),
                   ModelSpec(str(tiny_llama_dir)))
    c.startup()
    c.events = events
    with torch.inference_mode():
        yield c


def _add(core, rid: str, prompt: str, n: int) -> None:
    core.add_request(GenerateRequest(prompt=prompt, sampling=greedy(n, ignore_eos=True), request_id=rid),
                     time.monotonic())


def _steps(core) -> list:
    return [e.stats for e in core.events if isinstance(e, StepCompleted)]


def test_a_request_that_joins_later_starts_later_and_both_finish(core):
    # long enough to still be decoding (in bursts of several steps) when the short one is done
    _add(core, "long", "to be or not to be that is the question", 200)
    for _ in range(5):
        core.step()
    _add(core, "short", "a horse", 3)
    while core.has_work():
        core.step()
    steps = _steps(core)
    lanes = [{r.request_id: r for r in s.rows} for s in steps]
    first = {rid: next(i for i, lane in enumerate(lanes) if rid in lane) for rid in ("long", "short")}
    last = {rid: max(i for i, lane in enumerate(lanes) if rid in lane) for rid in ("long", "short")}
    assert first["short"] == 5 and first["long"] == 0
    assert last["short"] < last["long"]  # the short one joins, finishes and leaves while the long one runs on
    assert lanes[first["short"]]["short"].num_prefill_tokens > 0
    assert lanes[last["short"]]["short"].finished and not lanes[last["short"]]["long"].finished
    assert sum(lane["long"].num_output_tokens for lane in lanes if "long" in lane) == 200


def test_prefill_chunks_show_as_prefill_without_output(core):
    _add(core, "p", " ".join(["the quick brown fox"] * 10), 2)  # longer than the 16-token budget
    core.step()
    row = _steps(core)[-1].rows[0]
    assert row.num_prefill_tokens == 16 and row.num_output_tokens == 0


def test_a_preempted_request_shows_a_gap(core):
    for rid in "abc":
        _add(core, rid, "to be or not", 12)
    for _ in range(3):
        core.step()
    core.apply_config(core.config.with_(batching=BatchingConfig(enabled=False)))
    core.step()
    stats = _steps(core)[-1]
    assert set(stats.preempted_ids) == {"b", "c"} and [r.request_id for r in stats.rows] == ["a"]
    assert set(stats.waiting_ids) == {"b", "c"}


def test_an_aborted_request_ends_and_leaves_the_lanes(core):
    _add(core, "x", "to be", 50)
    _add(core, "y", "a horse", 50)
    core.step()
    core.abort("x")
    core.step()
    assert [r.request_id for r in _steps(core)[-1].rows] == ["y"]
    fin = [e for e in core.events if isinstance(e, RequestFinished) and e.request_id == "x"]
    assert len(fin) == 1 and fin[0].reason is FinishReason.CANCELLED


def test_phases_partition_the_step_and_drafts_are_counted(core):
    core.apply_config(core.config.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.NGRAM, num_draft_tokens=3)))
    _add(core, "s", "to be or not to be or not to be or not", 24)
    while core.has_work():
        core.step()
    steps = _steps(core)
    for s in steps:
        assert s.phases.forward_s > 0 and s.phases.host_s > 0
        assert abs(s.phases.total_s - s.step_time_s) <= 0.05 * s.step_time_s
    drafted = sum(r.num_drafted for s in steps for r in s.rows)
    accepted = sum(r.num_accepted for s in steps for r in s.rows)
    assert drafted > 0 and 0 <= accepted <= drafted
    assert drafted == sum(s.spec.num_draft_tokens for s in steps)
