"""`workbench bench --suite serve`: both rows measured in one run, same greedy tokens (not timed)."""

from __future__ import annotations

from app.serve.bench import NUM_CLIENTS, suite_serve
from engine.bench_suites import BenchOptions
from engine.config import ModelSpec


def test_serve_suite_rows_and_identical_outputs(tiny_llama_dir):
    logs: list[str] = []
    local, served = suite_serve(BenchOptions(spec=ModelSpec(str(tiny_llama_dir)), quick=True), logs.append,
                                repeats=2, new_tokens=16)
    assert (local.name, served.name) == ("in-process-8", "served-8")
    assert served.outputs_match_reference is True  # the served greedy tokens are the engine's own
    assert len(served.outputs) == NUM_CLIENTS and all(len(o) == 16 for o in served.outputs)
    assert local.completion_tokens == served.completion_tokens == NUM_CLIENTS * 16
    assert served.extra["served_ratio"] == served.tokens_per_s / local.tokens_per_s
    assert local.extra["repeats"] == served.extra["repeats"] == 2
    assert local.extra["tokens_per_s_min"] <= local.tokens_per_s <= local.extra["tokens_per_s_max"]
    assert any("in-process, repeat 2/2" in line for line in logs)
