"""The suites of `workbench bench`. Each returns RunResults measured in this one process."""

from __future__ import annotations

from dataclasses import dataclass

from engine.bench import (
    BENCH_PROMPTS,
    EngineSession,
    Log,
    RunResult,
    continuous_config,
    engine_result,
    greedy_requests,
    hf_generate,
    hf_result,
    kv_configs,
    sequential_config,
)
from engine.config import EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SamplingParams
from engine.models import load_model


@dataclass(frozen=True)
class BenchOptions:
    spec: ModelSpec
    quick: bool = False
    draft: str | None = None

    @property
    def kv_new_tokens(self) -> int:
        return 128 if self.quick else 512

    @property
    def batch_lengths(self) -> list[int]:
        base = [32, 96, 48, 128, 64, 112, 40, 80] if self.quick else [64, 256, 96, 320, 128, 224, 80, 160]
        return base

    @property
    def prefix_turns(self) -> int:
        return 10


def _prompts(tokenizer, n: int) -> list[list[int]]:
    return [tokenizer.encode(BENCH_PROMPTS[i % len(BENCH_PROMPTS)]) for i in range(n)]


def _warm(session: EngineSession, prompt: list[int]) -> None:
    session.run(greedy_requests([prompt], [8]))


def suite_kv(opts: BenchOptions, log: Log) -> list[RunResult]:
    peer = load_model(opts.spec)
    tok = peer.tokenizer
    prompts = _prompts(tok, 1)
    n = opts.kv_new_tokens
    session = EngineSession(opts.spec, sequential_config())
    results = []
    try:
        _warm(session, prompts[0])
        hf_generate(peer.model, prompts, [8], tok.pad_token_id)  # warm the peer too
        for name, cfg in kv_configs().items():
            log(f"kv: {name} ({n} new tokens)")
            session.configure(cfg)
            fin, wall = session.run(greedy_requests(prompts, [n]))
            results.append(engine_result(name, cfg, session, fin, wall))
        log("kv: hf-generate")
        outs, wall = hf_generate(peer.model, prompts, [n], tok.pad_token_id)
        ref = hf_result("hf-generate", outs, wall, peer.info.weights_bytes, [n])
        results.append(ref)
    finally:
        session.close()
    for r in results[:2]:
        r.outputs_match_reference = r.outputs == ref.outputs
    ref.outputs_match_reference = None
    return results


def suite_batching(opts: BenchOptions, log: Log) -> list[RunResult]:
    peer = load_model(opts.spec)
    tok = peer.tokenizer
    lengths = opts.batch_lengths
    prompts = _prompts(tok, len(lengths))
    session = EngineSession(opts.spec, sequential_config())
    results = []
    try:
        _warm(session, prompts[0])
        for name, cfg in (("sequential", sequential_config()), ("continuous-8", continuous_config(8))):
            log(f"batching: {name} ({len(lengths)} requests, {sum(lengths)} tokens)")
            session.configure(cfg)
            fin, wall = session.run(greedy_requests(prompts, lengths))
            results.append(engine_result(name, cfg, session, fin, wall))
        log("batching: hf-static-8")
        outs, wall = hf_generate(peer.model, prompts, lengths, tok.pad_token_id)
        results.append(hf_result("hf-static-8", outs, wall, peer.info.weights_bytes, lengths))
    finally:
        session.close()
    ref = results[0].outputs
    results[0].outputs_match_reference = None
    results[1].outputs_match_reference = results[1].outputs == ref
    results[2].outputs_match_reference = results[2].outputs == ref
    results[2].extra["note"] = "one left-padded batch; runs until the longest request, useful tokens counted"
    return results


def _conversation_turns(session: EngineSession, turns: int, reply_tokens: int) -> list[tuple[str, str]]:
    """Play a conversation of `turns` user turns, returning the messages (user/assistant)."""
    msgs: list[tuple[str, str]] = []
    for i in range(turns):
        msgs.append(("user", f"Good sir, tell me the {i + 1}th thing thou knowest of the king."))
        fin, _ = session.run([GenerateRequest(messages=tuple(msgs),
                                              sampling=SamplingParams(max_new_tokens=reply_tokens, ignore_eos=True))])
        msgs.append(("assistant", next(iter(fin.values())).text))
    return msgs


def suite_prefix(opts: BenchOptions, log: Log) -> list[RunResult]:
    turns, reply = opts.prefix_turns, 24 if opts.quick else 48
    session = EngineSession(opts.spec, EngineConfig(kv_cache=KVCacheMode.PREFIX))
    results = []
    try:
        log(f"prefix: playing a {turns}-turn conversation")
        history = _conversation_turns(session, turns - 1, reply)
        last = history + [("user", "And what of the queen?")]
        sampling = SamplingParams(max_new_tokens=reply, ignore_eos=True)
        first = ((history[0]),)
        cases = [
            ("turn-1", EngineConfig(kv_cache=KVCacheMode.ON), first),
            ("turn-10", EngineConfig(kv_cache=KVCacheMode.PREFIX), tuple(last)),
            ("turn-10-no-reuse", EngineConfig(kv_cache=KVCacheMode.ON), tuple(last)),
        ]
        for name, cfg, msgs in cases:
            if name == "turn-10":
                session.configure(cfg)
                # the prefix cache holds turn 9's conversation (played above with reuse on)
                _conversation_turns_refill(session, history, reply)
            else:
                session.configure(cfg)
            log(f"prefix: {name}")
            fin, wall = session.run([GenerateRequest(messages=msgs, sampling=sampling)])
            res = engine_result(name, cfg, session, fin, wall)
            f = next(iter(fin.values()))
            res.extra["prompt_tokens"] = f.stats.prompt_tokens
            res.extra["cached_prompt_tokens"] = f.stats.cached_prompt_tokens
            results.append(res)
    finally:
        session.close()
    return results


def _conversation_turns_refill(session: EngineSession, history: list[tuple[str, str]], reply: int) -> None:
    """With prefix reuse freshly enabled, replay the last turn so its KV is cached (as in a live chat)."""
    msgs = tuple(history[:-1])
    session.run([GenerateRequest(messages=msgs, sampling=SamplingParams(max_new_tokens=reply, ignore_eos=True))])


SUITES = {
    "kv": suite_kv,
    "batching": suite_batching,
    "prefix": suite_prefix,
}
