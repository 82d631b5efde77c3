from __future__ import annotations

import pytest

from engine.events import RequestFinished
from engine.loadgen import TAG, LoadGenerator, LoadSpec
from tests.helpers.engine_utils import pump, started_engine


def test_spec_validation():
    with pytest.raises(ValueError):
        LoadSpec(users=0)
    with pytest.raises(ValueError):
        LoadSpec(min_new_tokens=10, max_new_tokens=5)


def test_requests_vary_and_are_reproducible():
    a = LoadGenerator(lambda r: "x", LoadSpec(seed=3))
    b = LoadGenerator(lambda r: "x", LoadSpec(seed=3))
    ra = [a.make_request() for _ in range(20)]
    rb = [b.make_request() for _ in range(20)]
    assert ra == rb
    lengths = {r.sampling.max_new_tokens for r in ra}
    assert len(lengths) > 5 and min(lengths) >= 16 and max(lengths) <= 96
    assert all(r.tag == TAG for r in ra)


def test_drives_the_engine_with_bounded_concurrency(tiny_llama_dir):
    engine, c = started_engine(tiny_llama_dir)
    spec = LoadSpec(users=3, rate_per_s=200.0, min_new_tokens=4, max_new_tokens=12, max_requests=12)
    gen = LoadGenerator(engine.submit, spec)
    max_in_flight = 0
    finished = 0
    gen.start()
    try:
        while finished < 12:
            def progressed(c, n=finished):
                return len(c.finished) > n
            pump(engine, c, progressed)
            for rid, fin in c.finished.items():
                gen.notify_finished(rid)
            finished = len(c.finished)
            max_in_flight = max(max_in_flight, max((s.batch_size + s.num_waiting for s in c.steps), default=0))
        assert gen.stats.submitted == 12 and gen.stats.finished == 12
        assert max_in_flight <= 3
        assert all(isinstance(f, RequestFinished) and f.tag == TAG for f in c.finished.values())
    finally:
        gen.stop()
        engine.shutdown()
    assert not gen.running
