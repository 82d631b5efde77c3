from __future__ import annotations

from engine.config import BatchingConfig, EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, Quantisation
from engine.pool import EngineBuilt, EngineFailed, EnginePool, PoolBuilder, PoolStarted
from tests.helpers.engine_utils import Collected, greedy, pump


def test_engines_share_weights_and_agree(tiny_llama_dir):
    pool = EnginePool()
    spec = ModelSpec(str(tiny_llama_dir))
    configs = [EngineConfig(), EngineConfig(kv_cache=KVCacheMode.OFF),
               EngineConfig(batching=BatchingConfig(enabled=False))]
    try:
        engines = [pool.engine(spec, c) for c in configs]
        assert pool.num_weight_copies == 1
        assert len({id(e._core.loaded.model) for e in engines}) == 1
        collected = [Collected() for _ in engines]
        rids = [e.submit(GenerateRequest(prompt="to be or not", sampling=greedy(16, ignore_eos=True)))
                for e in engines]  # all three run at once (race)
        for e, c, r in zip(engines, collected, rids):
            pump(e, c, lambda c, r=r: r in c.finished)
        outs = [c.finished[r].token_ids for c, r in zip(collected, rids)]
        assert outs[0] == outs[1] == outs[2]
        pool.engine(spec, EngineConfig(quantisation=Quantisation.BF16))
        assert pool.num_weight_copies == 2
    finally:
        assert pool.shutdown()


def _results(builder: PoolBuilder, n: int, timeout: float = 60.0) -> list:
    return [builder.results.get(timeout=timeout) for _ in range(n)]


def test_builder_builds_on_its_thread_and_reports_each_job(tiny_llama_dir, tmp_path):
    builder = PoolBuilder()
    spec = ModelSpec(str(tiny_llama_dir))
    missing = ModelSpec(str(tmp_path / "no-such-model"))
    jobs = [(spec, EngineConfig()), (missing, EngineConfig()), (spec, EngineConfig(kv_cache=KVCacheMode.OFF))]
    builder.start(1, jobs)
    started, built, failed, built_too = _results(builder, 4)
    try:
        assert isinstance(started, PoolStarted) and started.generation == 1
        assert isinstance(built, EngineBuilt) and built.column == 0
        assert isinstance(failed, EngineFailed) and failed.column == 1 and failed.message
        assert isinstance(built_too, EngineBuilt) and built_too.column == 2  # a failure stops no other job
        assert started.pool.num_weight_copies == 1 and len(started.pool.engines) == 2
        assert builder.join(5.0)
    finally:
        assert started.pool.shutdown()


def test_a_newer_build_cancels_the_older_and_retires_its_pool(tiny_llama_dir):
    builder = PoolBuilder()
    spec = ModelSpec(str(tiny_llama_dir))
    builder.start(1, [(spec, EngineConfig())] * 3)
    first = builder.results.get(timeout=60.0)  # the first build is under way
    builder.start(2, [(spec, EngineConfig())], retire=first.pool)
    assert builder.join(60.0)
    results = []
    while not builder.results.empty():
        results.append(builder.results.get_nowait())
    newest = [r for r in results if r.generation == 2]
    assert [type(r) for r in newest] == [PoolStarted, EngineBuilt]
    order = [r.generation for r in results]
    assert order == sorted(order)  # one build at a time: the newer one waited for the older
    assert all(not e.is_alive for e in first.pool.engines) and not first.pool.engines  # retired
    assert newest[0].pool.shutdown()
