"""The step timeline's recorder, Qt-free: the last engine steps as blocks on request lanes.

Each StepStats becomes one step whose width is its wall time (x is busy time: idle stretches
between steps are left out, so a block's width always means time spent computing). Every
request the step computed gets a block of its kind (prefill chunk, decode, draft + verify with
accepted/rejected counts); requests queued or preempted in that step get a waiting/preempted
block. Markers note reconfigurations and model loads.

To keep a 30-minute load test smooth the recorder keeps at most `max_steps` recent steps in
full detail; older ones are merged `merge_factor` at a time (a merged block sums the counts and
times, its kind is the busiest one), and the oldest merged ones are dropped past `max_merged`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from engine.metrics import StepPhases, StepStats

PREFILL, DECODE, SPEC, WAITING, PREEMPTED = "prefill", "decode", "draft+verify", "waiting", "preempted"
KINDS = (PREFILL, DECODE, SPEC, WAITING, PREEMPTED)
_RANK = {PREEMPTED: 4, PREFILL: 3, SPEC: 2, DECODE: 1, WAITING: 0}  # what a merged block shows


@dataclass(frozen=True)
class Block:
    request_id: str
    kind: str
    prefill_tokens: int = 0
    output_tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    finished: bool = False

    @property
    def rejected(self) -> int:
        return self.drafted - self.accepted

    def describe(self) -> str:
        if self.kind == PREFILL:
            return f"prefill {self.prefill_tokens} tokens" + (f", {self.output_tokens} out" if self.output_tokens else "")
        if self.kind == SPEC:
            pre = f"prefill {self.prefill_tokens} tokens, " if self.prefill_tokens else ""
            return (f"{pre}draft {self.drafted}, accepted {self.accepted}, rejected {self.rejected}, "
                    f"{self.output_tokens} out")
        if self.kind == DECODE:
            return f"decode {self.output_tokens} token" + ("s" if self.output_tokens != 1 else "")
        return self.kind


def _merge_blocks(a: Block, b: Block) -> Block:
    kind = a.kind if _RANK[a.kind] >= _RANK[b.kind] else b.kind
    return Block(a.request_id, kind, a.prefill_tokens + b.prefill_tokens, a.output_tokens + b.output_tokens,
                 a.drafted + b.drafted, a.accepted + b.accepted, a.finished or b.finished)


@dataclass(frozen=True)
class Step:
    index: int  # engine step number (of the first step, when merged)
    start: float  # busy-time x position, seconds
    wall_s: float
    timestamp_s: float  # monotonic end of the (last) step
    batch_size: int
    prefill_tokens: int
    output_tokens: int
    phases: StepPhases
    blocks: tuple[Block, ...]
    merged: int = 1  # how many engine steps this block stands for
    decode_steps: int = 1  # forward steps those ran (a burst of greedy decode steps runs several)

    @property
    def end(self) -> float:
        return self.start + self.wall_s

    @property
    def tokens_computed(self) -> int:
        return self.prefill_tokens + self.output_tokens

    def block(self, request_id: str) -> Block | None:
        return next((b for b in self.blocks if b.request_id == request_id), None)

    def describe(self) -> str:
        ph = self.phases
        head = f"step {self.index}" if self.merged == 1 else f"steps {self.index}–{self.index + self.merged - 1}"
        if self.decode_steps > self.merged:
            head += f" ({self.decode_steps} forward steps: greedy decode bursts)"
        return (f"{head}: {self.wall_s * 1e3:.2f} ms wall · batch {self.batch_size} · "
                f"{self.prefill_tokens} prefill + {self.output_tokens} output tokens\n"
                f"schedule {ph.schedule_s * 1e3:.2f} ms · draft {ph.draft_s * 1e3:.2f} ms · "
                f"forward {ph.forward_s * 1e3:.2f} ms · verify/sample {ph.verify_s * 1e3:.2f} ms · "
                f"host {ph.host_s * 1e3:.2f} ms")


def _merge_steps(steps: list[Step]) -> Step:
    first = steps[0]
    blocks: dict[str, Block] = {}
    for s in steps:
        for b in s.blocks:
            blocks[b.request_id] = _merge_blocks(blocks[b.request_id], b) if b.request_id in blocks else b
    ph = StepPhases(*(sum(getattr(s.phases, f) for s in steps)
                      for f in ("schedule_s", "draft_s", "forward_s", "verify_s", "host_s")))
    return Step(first.index, first.start, sum(s.wall_s for s in steps), steps[-1].timestamp_s,
                max(s.batch_size for s in steps), sum(s.prefill_tokens for s in steps),
                sum(s.output_tokens for s in steps), ph, tuple(blocks.values()), sum(s.merged for s in steps),
                sum(s.decode_steps for s in steps))


@dataclass(frozen=True)
class Marker:
    x: float  # busy-time position (the boundary before the next step)
    kind: str  # config | model
    text: str


@dataclass
class Lane:
    request_id: str
    first_x: float
    last_x: float = 0.0
    ended: str = ""  # "" while live; finished (seen in its last step); gone (left without finishing);
    # or the terminal event's reason (stop, length, cancelled, error) when the view is told
    row: int = 0


@dataclass
class TimelineRecorder:
    max_steps: int = 1500
    merge_factor: int = 16
    max_merged: int = 1500
    steps: list[Step] = field(default_factory=list)  # merged (old) first, then detailed ones
    markers: list[Marker] = field(default_factory=list)
    lanes: dict[str, Lane] = field(default_factory=dict)
    num_merged: int = 0  # how many of `steps` at the front are merged
    num_recorded: int = 0
    _x: float = 0.0
    _live: set = field(default_factory=set)

    # ---- recording
    def record(self, stats: StepStats) -> Step:
        x = self._x
        blocks = []
        for r in stats.rows:
            if r.num_prefill_tokens and not r.num_drafted:
                kind = PREFILL
            elif r.num_drafted:
                kind = SPEC
            else:
                kind = DECODE
            blocks.append(Block(r.request_id, kind, r.num_prefill_tokens, r.num_output_tokens, r.num_drafted,
                                r.num_accepted, r.finished))
        computed = {r.request_id for r in stats.rows}
        for rid in stats.preempted_ids:
            if rid not in computed:
                blocks.append(Block(rid, PREEMPTED))
        for rid in stats.waiting_ids:
            if rid not in computed and rid not in stats.preempted_ids:
                blocks.append(Block(rid, WAITING))
        step = Step(self.num_recorded, x, max(stats.step_time_s, 0.0), stats.timestamp_s, stats.batch_size,
                    stats.num_prefill_tokens, stats.num_output_tokens, stats.phases, tuple(blocks),
                    decode_steps=stats.decode_steps)
        self.num_recorded += 1
        self._x = step.end
        self.steps.append(step)
        present = set()
        for b in blocks:
            present.add(b.request_id)
            lane = self.lanes.get(b.request_id)
            if lane is None:
                lane = self.lanes[b.request_id] = Lane(b.request_id, x, row=self._free_row())
            lane.last_x = step.end
            if lane.ended == "gone":
                lane.ended = ""  # skipped a step (budget) and came back: it never left
            if b.finished:
                lane.ended = "finished"
        for rid in self._live - present:  # left without finishing: aborted (or errored)
            lane = self.lanes.get(rid)
            if lane is not None and not lane.ended:
                lane.ended = "gone"
        self._live = {b.request_id for b in blocks if not b.finished}
        self._compact()
        return step

    def finish(self, request_id: str, reason: str) -> None:
        """A request's terminal event (stop, length, cancelled, error): its lane ends where it stands."""
        lane = self.lanes.get(request_id)
        if lane is not None and lane.ended in ("", "gone"):
            lane.ended = reason
        self._live.discard(request_id)

    def mark(self, kind: str, text: str) -> Marker:
        m = Marker(self._x, kind, text)
        self.markers.append(m)
        return m

    def clear(self) -> None:
        self.steps.clear()
        self.markers.clear()
        self.lanes.clear()
        self._live = set()
        self.num_merged = 0

    def _free_row(self) -> int:
        """Lanes reuse the row of a request that ended, so a long run does not grow without bound."""
        taken = {lane.row for lane in self.lanes.values() if not lane.ended}
        row = 0
        while row in taken:
            row += 1
        return row

    def _compact(self) -> None:
        detailed = len(self.steps) - self.num_merged
        if detailed <= self.max_steps + self.merge_factor:
            return
        lo = self.num_merged
        merged = _merge_steps(self.steps[lo:lo + self.merge_factor])
        self.steps[lo:lo + self.merge_factor] = [merged]
        self.num_merged += 1
        if self.num_merged > self.max_merged:
            drop = self.num_merged - self.max_merged
            del self.steps[:drop]
            self.num_merged -= drop
            horizon = self.steps[0].start
            self.markers = [m for m in self.markers if m.x >= horizon]
            for rid in [rid for rid, lane in self.lanes.items() if lane.ended and lane.last_x < horizon]:
                del self.lanes[rid]

    # ---- reading
    @property
    def end_x(self) -> float:
        return self._x

    @property
    def start_x(self) -> float:
        return self.steps[0].start if self.steps else 0.0

    def visible(self, x0: float, x1: float) -> list[Step]:
        """Steps overlapping [x0, x1] (binary search: the view paints only these)."""
        starts = [s.start for s in self.steps]
        lo = max(0, bisect.bisect_right(starts, x0) - 1)
        hi = bisect.bisect_left(starts, x1)
        return [s for s in self.steps[lo:hi] if s.end >= x0]

    def step_at(self, x: float) -> Step | None:
        steps = self.visible(x, x)
        return next((s for s in steps if s.start <= x <= s.end), None)

    def lane_order(self) -> list[Lane]:
        return sorted(self.lanes.values(), key=lambda lane: lane.first_x)

    def num_rows(self) -> int:
        return 1 + max((lane.row for lane in self.lanes.values()), default=-1)

    def lane_at_row(self, row: int, x: float, tolerance: float = 0.0) -> Lane | None:
        """The request drawn on `row` at busy time x, give or take `tolerance` (rows are reused once a
        lane ends)."""
        best = None
        for lane in self.lanes.values():
            if lane.row == row and lane.first_x - tolerance <= x <= max(lane.last_x, lane.first_x) + tolerance:
                best = lane
        return best

    def blocks_of(self, request_id: str) -> list[tuple[Step, Block]]:
        return [(s, b) for s in self.steps for b in s.blocks if b.request_id == request_id]
