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
    eval_text: str = "\n\n".join(BENCH_PROMPTS) * 8  # held-out text for perplexity

    @property
    def kv_new_tokens(self) -> int:
        return 128 if self.quick else 512

    @property
    def batch_lengths(self) -> list[int]:
        """Output lengths of the batching suite's requests, all submitted at once: more requests
        than batch slots, so finished rows are refilled (the point of continuous batching)."""
        base = [32, 96, 48, 128, 64, 112, 40, 80] if self.quick else [64, 256, 96, 320, 128, 224, 80, 160]
        return base * (2 if self.quick else 3)

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
            log(f"batching: {name} ({len(lengths)} requests at once, {sum(lengths)} tokens)")
            session.configure(cfg)
            fin, wall = session.run(greedy_requests(prompts, lengths))
            results.append(engine_result(name, cfg, session, fin, wall))
        log("batching: hf-static-8")
        outs, wall = [], 0.0
        for i in range(0, len(prompts), 8):  # static batches of 8, in arrival order
            o, w = hf_generate(peer.model, prompts[i:i + 8], lengths[i:i + 8], tok.pad_token_id)
            outs += o
            wall += w
        results.append(hf_result("hf-static-8", outs, wall, peer.info.weights_bytes, lengths))
    finally:
        session.close()
    ref = results[0].outputs
    results[0].outputs_match_reference = None
    results[1].outputs_match_reference = results[1].outputs == ref
    results[2].outputs_match_reference = results[2].outputs == ref
    results[2].extra["note"] = "left-padded batches of 8; each runs until its longest request; useful tokens counted"
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


def _level_available(level, spec: ModelSpec) -> str | None:
    from engine.models import resolve_device
    from engine.quant import availability

    return availability(level, resolve_device(spec.device))


def suite_quant(opts: BenchOptions, log: Log) -> list[RunResult]:
    from engine.config import Quantisation
    from engine.quality import agreement, perplexity

    base = load_model(opts.spec)
    tok = base.tokenizer
    eval_ids = tok.encode(opts.eval_text)[: 2048 if opts.quick else 8192]
    prompts = _prompts(tok, 4)
    n = 48 if opts.quick else 128
    del base
    session = EngineSession(opts.spec, sequential_config())
    results: list[RunResult] = []
    reference: list[list[int]] | None = None
    ref_ppl = None
    try:
        _warm(session, prompts[0])
        for level in Quantisation:
            why = _level_available(level, opts.spec)
            if why:
                log(f"quant: {level.value} skipped: {why}")
                results.append(RunResult(name=level.value, config={"quantisation": level.value},
                                         extra={"skipped": why}))
                continue
            log(f"quant: {level.value}")
            cfg = sequential_config().with_(quantisation=level)
            session.configure(cfg)
            fin, wall = session.run(greedy_requests(prompts, [n] * len(prompts)))
            res = engine_result(level.value, cfg, session, fin, wall)
            probe = load_model(opts.spec, level)
            res.extra["perplexity"] = perplexity(probe.model, eval_ids)
            res.extra["skipped_layers"] = len(probe.skipped_modules)
            del probe
            if reference is None:
                reference, ref_ppl = res.outputs, res.extra["perplexity"]
            flat_ref = [t for o in reference for t in o]
            agree = [agreement(r, o) for r, o in zip(reference, res.outputs)]
            res.extra["agreement"] = sum(a.share * len(r) for a, r in zip(agree, reference)) / len(flat_ref)
            res.extra["first_divergence"] = min((a.first_divergence for a in agree if a.first_divergence is not None),
                                                default=None)
            res.extra["perplexity_ratio"] = res.extra["perplexity"] / ref_ppl
            res.outputs_match_reference = res.outputs == reference
            results.append(res)
    finally:
        session.close()
    return results


def suite_spec(opts: BenchOptions, log: Log) -> list[RunResult]:
    from engine.config import SpeculativeConfig, SpeculativeMode

    if not opts.draft:
        raise RuntimeError("the spec suite needs a draft model (--draft)")
    peer = load_model(opts.spec)
    draft_peer = load_model(ModelSpec(opts.draft, device=opts.spec.device, dtype=opts.spec.dtype))
    tok = peer.tokenizer
    n = 64 if opts.quick else 160
    count = 4 if opts.quick else 8
    prompts = _prompts(tok, count)
    lengths = [n] * count

    def spec_cfg(mode, k=4, adaptive=False, batching=False):
        base = continuous_config(8) if batching else sequential_config()
        return base.with_(speculative=SpeculativeConfig(mode=mode, num_draft_tokens=k, adaptive=adaptive,
                                                        draft_model=opts.draft))

    cases = [
        ("target-only", sequential_config()),
        ("draft-k4", spec_cfg(SpeculativeMode.DRAFT, 4)),
        ("draft-adaptive", spec_cfg(SpeculativeMode.DRAFT, 4, adaptive=True)),
        ("ngram", spec_cfg(SpeculativeMode.NGRAM, 4)),
        ("continuous-8", continuous_config(8)),
        ("continuous-8-spec", spec_cfg(SpeculativeMode.DRAFT, 4, batching=True)),
    ]
    session = EngineSession(opts.spec, sequential_config())
    results: list[RunResult] = []
    try:
        _warm(session, prompts[0])
        for name, cfg in cases:
            log(f"spec: {name} ({count} requests x {n} tokens)")
            session.configure(cfg)
            if name != "target-only":
                _warm(session, prompts[0])
            fin, wall = session.run(greedy_requests(prompts, lengths))
            results.append(engine_result(name, cfg, session, fin, wall))
        log("spec: hf-assisted")
        outs, total = [], 0.0
        for p in prompts:
            o, wall = hf_generate(peer.model, [p], [n], tok.pad_token_id, assistant_model=draft_peer.model,
                                  num_assistant_tokens=4)
            outs += o
            total += wall
        results.append(hf_result("hf-assisted", outs, total, peer.info.weights_bytes + draft_peer.info.weights_bytes,
                                 lengths))
    finally:
        session.close()
    ref = results[0].outputs
    for r in results[1:]:
        r.outputs_match_reference = r.outputs == ref
    return results


SUITES["quant"] = suite_quant
SUITES["spec"] = suite_spec
