"""The step timeline's recorder on scripted StepStats: lanes, kinds, widths, markers, merging."""

from __future__ import annotations

from engine.metrics import RowActivity, StepPhases, StepStats
from ui.viewmodels.timeline import DECODE, PREEMPTED, PREFILL, SPEC, WAITING, TimelineRecorder

T0 = 100.0


def stats(t: float, rows=(), *, wall: float = 0.01, waiting=(), preempted=(),
          phases: StepPhases | None = None) -> StepStats:
    return StepStats(timestamp_s=T0 + t, step_time_s=wall, batch_size=len(rows), num_waiting=len(waiting),
                     num_prefill_tokens=sum(r.num_prefill_tokens for r in rows),
                     num_output_tokens=sum(r.num_output_tokens for r in rows), kv_cache_bytes=0,
                     prefix_cache_bytes=0, weights_bytes=0, rss_bytes=0, accelerator_bytes=None, tokens_per_s=0.0,
                     phases=phases or StepPhases(forward_s=wall), rows=tuple(rows), waiting_ids=tuple(waiting),
                     preempted_ids=tuple(preempted))


def row(rid, prefill=0, out=0, drafted=0, accepted=0, finished=False) -> RowActivity:
    return RowActivity(rid, prefill, out, drafted, accepted, finished)


def test_lanes_kinds_and_widths_follow_the_steps():
    rec = TimelineRecorder()
    rec.record(stats(0.0, [row("a", prefill=12)], wall=0.02, waiting=["b"]))
    rec.record(stats(0.1, [row("a", out=1)], wall=0.01, waiting=["b"]))
    rec.record(stats(0.2, [row("a", out=3, drafted=4, accepted=2), row("b", prefill=5)], wall=0.03))
    rec.record(stats(0.3, [row("a", out=1, finished=True), row("b", out=1)], wall=0.01))
    rec.record(stats(0.4, [row("b", out=1)], wall=0.01, preempted=[]))

    kinds = {rid: [b.kind for _, b in rec.blocks_of(rid)] for rid in ("a", "b")}
    assert kinds["a"] == [PREFILL, DECODE, SPEC, DECODE]
    assert kinds["b"] == [WAITING, WAITING, PREFILL, DECODE, DECODE]
    spec = rec.blocks_of("a")[2][1]
    assert (spec.drafted, spec.accepted, spec.rejected) == (4, 2, 2)
    assert spec.describe() == "draft 4, accepted 2, rejected 2, 3 out"
    both = TimelineRecorder().record(stats(0.5, [row("b", prefill=7, out=2, drafted=3, accepted=1)])).blocks[0]
    assert both.kind == SPEC and both.describe().startswith("prefill 7 tokens, draft 3")  # every count shown
    # widths are wall times, laid end to end (busy time, idle left out)
    assert [round(s.wall_s, 3) for s in rec.steps] == [0.02, 0.01, 0.03, 0.01, 0.01]
    assert rec.steps[2].start == rec.steps[1].end
    assert abs(rec.end_x - 0.08) < 1e-9
    assert rec.lanes["a"].ended == "finished" and rec.lanes["b"].ended == ""
    assert rec.lanes["a"].first_x == 0.0 and rec.lanes["b"].first_x == 0.0  # b was queued from the start
    assert rec.steps[2].tokens_computed == 3 + 5


def test_a_request_that_joins_later_starts_later_and_a_vanished_one_ends():
    rec = TimelineRecorder()
    rec.record(stats(0.0, [row("long", prefill=8)]))
    rec.record(stats(0.1, [row("long", out=1), row("gone", prefill=4)]))
    rec.record(stats(0.2, [row("long", out=1), row("gone", out=1)]))
    rec.record(stats(0.3, [row("long", out=1)]))  # 'gone' left without finishing: aborted
    assert rec.lanes["gone"].first_x > rec.lanes["long"].first_x
    assert rec.lanes["gone"].ended == "gone" and rec.lanes["long"].ended == ""
    assert rec.lanes["gone"].last_x == rec.steps[2].end
    assert rec.lanes["gone"].row != rec.lanes["long"].row
    rec.finish("gone", "cancelled")
    assert rec.lanes["gone"].ended == "cancelled"


def test_preempted_shows_the_gap_and_rows_are_reused():
    rec = TimelineRecorder()
    rec.record(stats(0.0, [row("a", prefill=4), row("b", prefill=4)]))
    rec.record(stats(0.1, [row("a", out=1)], preempted=["b"], waiting=["b"]))
    rec.record(stats(0.2, [row("a", out=1, finished=True)], waiting=["b"]))
    rec.record(stats(0.3, [row("b", prefill=5)]))
    rec.record(stats(0.4, [row("c", prefill=2), row("b", out=1)]))
    assert [b.kind for _, b in rec.blocks_of("b")] == [PREFILL, PREEMPTED, WAITING, PREFILL, DECODE]
    assert rec.lanes["c"].row == rec.lanes["a"].row  # a finished: its row is free again
    assert rec.lane_at_row(rec.lanes["a"].row, rec.steps[0].start + 1e-4).request_id == "a"
    assert rec.lane_at_row(rec.lanes["c"].row, rec.steps[4].start + 1e-4).request_id == "c"


def test_markers_sit_at_the_step_boundary():
    rec = TimelineRecorder()
    rec.record(stats(0.0, [row("a", prefill=4)], wall=0.02))
    m = rec.mark("config", "kv off")
    rec.record(stats(0.1, [row("a", out=1)], wall=0.01))
    assert m.x == rec.steps[1].start == 0.02


def test_old_steps_merge_and_the_oldest_drop_so_storage_is_bounded():
    rec = TimelineRecorder(max_steps=50, merge_factor=10, max_merged=20)
    for i in range(5000):
        rec.record(stats(i * 0.01, [row(f"r{i // 100}", out=1, finished=i % 100 == 99)], wall=0.001,
                         phases=StepPhases(forward_s=0.0006, host_s=0.0004)))
    assert len(rec.steps) <= 50 + 10 + 20
    assert rec.num_recorded == 5000
    merged = rec.steps[0]
    assert merged.merged == 10
    assert abs(merged.wall_s - 0.01) < 1e-9 and abs(merged.phases.total_s - 0.01) < 1e-9
    assert sum(b.output_tokens for b in merged.blocks) == 10
    # busy time is continuous across merged and detailed steps
    for a, b in zip(rec.steps, rec.steps[1:]):
        assert abs(a.end - b.start) < 1e-9
    # lanes of requests that ended before the kept window are gone; the live one stays
    assert len(rec.lanes) <= 4 and "r49" in rec.lanes
    assert rec.visible(rec.end_x - 0.0015, rec.end_x)[-1] is rec.steps[-1]
    assert rec.step_at(rec.steps[-3].start + 1e-5) is rec.steps[-3]
