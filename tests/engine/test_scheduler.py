"""The scheduler's plans on scripted arrivals, with fake model outputs and no model."""

from __future__ import annotations

from engine.config import BatchingConfig
from engine.scheduler import Scheduler, Sequence


def seq(rid: str, prompt_len: int) -> Sequence:
    return Sequence(request_id=rid, prompt_ids=list(range(prompt_len)))


def fake_step(s: Scheduler, outputs: dict[str, int] | None = None) -> dict[str, int]:
    """Plan, mark computed, append one token to each completing sequence; return the plan."""
    plan = s.schedule()
    s.update(plan)
    for e in plan.entries:
        if e.completes:
            e.seq.output_ids.append(7)
    return {e.seq.request_id: e.num_new_tokens for e in plan.entries}


def test_joins_at_step_boundaries_and_fifo():
    s = Scheduler(BatchingConfig(max_batch_size=2, token_budget=100))
    a, b, c = seq("a", 5), seq("b", 3), seq("c", 4)
    s.add(a)
    assert fake_step(s) == {"a": 5}
    s.add(b)
    s.add(c)
    assert fake_step(s) == {"a": 1, "b": 3}  # c waits: batch full
    s.remove("a")  # finished: leaves at once
    assert fake_step(s) == {"b": 1, "c": 4}
    assert [x.request_id for x in s.running] == ["b", "c"]


def test_token_budget_chunks_long_prompts():
    s = Scheduler(BatchingConfig(max_batch_size=4, token_budget=8))
    long, short = seq("long", 20), seq("short", 3)
    s.add(long)
    s.add(short)
    assert fake_step(s) == {"long": 8}
    assert fake_step(s) == {"long": 8}
    assert fake_step(s) == {"long": 4, "short": 3}
    assert long.output_ids == [7] and short.output_ids == [7]
    assert fake_step(s) == {"long": 1, "short": 1}


def test_batching_off_runs_one_at_a_time_and_shrinking_preempts_newest():
    s = Scheduler(BatchingConfig(max_batch_size=4))
    seqs = [seq(str(i), 2) for i in range(3)]
    for x in seqs:
        s.add(x)
    assert fake_step(s) == {"0": 2, "1": 2, "2": 2}
    s.config = BatchingConfig(enabled=False)
    plan = s.schedule()
    assert [x.request_id for x in plan.preempted] == ["2", "1"]  # newest first
    assert [e.seq.request_id for e in plan.entries] == ["0"]
    assert [x.request_id for x in s.waiting] == ["1", "2"]  # FIFO order kept
    assert seqs[1].num_computed_tokens == 2  # preemption keeps the computed count (KV is stashed)


def test_no_chunking_without_cache():
    s = Scheduler(BatchingConfig(max_batch_size=4, token_budget=8), chunked_prefill=False)
    a, b = seq("a", 12), seq("b", 5)
    s.add(a)
    s.add(b)
    assert fake_step(s) == {"a": 12}  # first runs whole even over budget
    s.reset_computed()
    assert s.schedule().entries[0].num_new_tokens == 13


def test_abort_waiting_and_running():
    s = Scheduler(BatchingConfig(max_batch_size=1))
    a, b = seq("a", 2), seq("b", 2)
    s.add(a)
    s.add(b)
    fake_step(s)
    assert s.remove("b") is b and s.remove("a") is a
    assert s.remove("a") is None
    assert not s.has_work()
