from __future__ import annotations

from engine.config import BatchingConfig, EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, Quantisation
from engine.pool import EnginePool
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
