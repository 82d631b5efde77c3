"""The suites of `workbench bench`. Each builds its rows as cases; `run_cases` warms them alike
and interleaves the repeats. Engine rows run in this process, the transformers peers in a
process of their own (engine.bench_peer)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.bench import (
    BENCH_PROMPTS,
    Case,
    EngineSession,
    Log,
    RunResult,
    continuous_config,
    engine_result,
    greedy_requests,
    hf_result,
    kv_configs,
    roofline,
    run_cases,
    sequential_config,
    stepwise,
)
from engine.bench_peer import PeerProcess
from engine.config import EngineConfig, GenerateRequest, KVCacheMode, ModelSpec, SamplingParams


@dataclass(frozen=True)
class BenchOptions:
    spec: ModelSpec
    quick: bool = False
    draft: str | None = None
    eval_text: str = "\n\n".join(BENCH_PROMPTS) * 8  # held-out text for perplexity
    repeats: int = 3
    bandwidth_bytes_per_s: float | None = None  # measured read bandwidth, for the roofline figure

    @property
    def min_measure_s(self) -> float:
        """Shortest measurement of a row: whole passes over its requests are repeated until it
        lasts this long (the continuous-batching rows took ~1 s, and swung 10 % between runs)."""
        return 0.0 if self.quick else 4.0

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


def _tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.name_or_path, trust_remote_code=spec.trust_remote_code)


def _prompts(tokenizer, n: int) -> list[list[int]]:
    return [tokenizer.encode(BENCH_PROMPTS[i % len(BENCH_PROMPTS)]) for i in range(n)]


def _warm(session: EngineSession, prompt: list[int]) -> None:
    session.run(greedy_requests([prompt], [8]))


def _engine_case(name: str, cfg: EngineConfig, session: EngineSession, requests: list[GenerateRequest],
                 warm_prompt: list[int], opts: BenchOptions, decode_roofline: bool = False) -> Case:
    def prepare() -> None:
        session.configure(cfg)
        _warm(session, warm_prompt)

    def measure() -> RunResult:
        # whole passes over the requests until the measurement lasts long enough that a second
        # of noise on a shared machine moves it little; latencies and speed over all passes,
        # outputs and token count of the first
        fin, wall = session.run(requests)
        first = engine_result(name, cfg, session, fin, wall)
        rounds = 1
        while wall < opts.min_measure_s:
            more, more_wall = session.run(requests)
            fin, wall, rounds = {**fin, **more}, wall + more_wall, rounds + 1
        res = first if rounds == 1 else engine_result(name, cfg, session, fin, wall)
        res.outputs, res.completion_tokens, res.extra["rounds"] = first.outputs, first.completion_tokens, rounds
        if decode_roofline:
            roofline(res, opts.bandwidth_bytes_per_s)
        return res

    return Case(name, measure, prepare)


def _peer(opts: BenchOptions, *, draft: str | None = None) -> PeerProcess:
    import torch

    peer = PeerProcess()
    peer.call(op="load", model=opts.spec.name_or_path, device=opts.spec.device.value,
              dtype=opts.spec.dtype.value, threads=torch.get_num_threads(), draft=draft)
    return peer


def _peer_case(name: str, peer: PeerProcess, weights: int, batches: list[tuple[list[list[int]], list[int]]],
               warm_prompt: list[int], *, assisted: bool = False, k: int | None = None, note: str = "",
               min_s: float = 0.0) -> Case:
    """A transformers peer row: the batches run one after another; their wall times add up."""
    def prepare() -> None:
        peer.call(op="generate", prompts=[warm_prompt], lengths=[8], assisted=assisted, k=k)

    def measure() -> RunResult:
        outs, wall, rounds = [], 0.0, 0
        while rounds == 0 or wall < min_s:  # whole passes, as the engine rows
            for prompts, lengths in batches:
                answer = peer.call(op="generate", prompts=prompts, lengths=lengths, assisted=assisted, k=k)
                if rounds == 0:
                    outs += answer["outputs"]
                wall += answer["wall_s"]
            rounds += 1
        res = hf_result(name, outs, wall / rounds, weights, [n for _p, ls in batches for n in ls])
        res.extra["rounds"] = rounds
        res.peak_rss_bytes = answer["rss_bytes"]
        res.extra["process"] = "own"
        if note:
            res.extra["note"] = note
        return res

    return Case(name, measure, prepare)


def suite_kv(opts: BenchOptions, log: Log) -> list[RunResult]:
    tok = _tokenizer(opts.spec)
    prompts = _prompts(tok, 1)
    n = opts.kv_new_tokens
    session = EngineSession(opts.spec, sequential_config())
    peer = _peer(opts)
    try:
        weights = session.info.weights_bytes
        cases = [_engine_case(name, cfg, session, greedy_requests(prompts, [n]), prompts[0], opts,
                              decode_roofline=True) for name, cfg in kv_configs().items()]
        cases.append(_peer_case("hf-generate", peer, weights, [(prompts, [n])], prompts[0], min_s=opts.min_measure_s))
        results = run_cases(cases, opts.repeats, log, "kv")
    finally:
        session.close()
        peer.close()
    ref = results[-1]
    for r in results[:-1]:
        r.outputs_match_reference = r.outputs_match_reference is not False and r.outputs == ref.outputs
    return results


def suite_batching(opts: BenchOptions, log: Log) -> list[RunResult]:
    tok = _tokenizer(opts.spec)
    lengths = opts.batch_lengths
    prompts = _prompts(tok, len(lengths))
    session = EngineSession(opts.spec, sequential_config())
    peer = _peer(opts)
    try:
        requests = greedy_requests(prompts, lengths)
        cases = [_engine_case(name, cfg, session, requests, prompts[0], opts)
                 for name, cfg in (("sequential", sequential_config()), ("continuous-8", continuous_config(8)))]
        batches = [(prompts[i:i + 8], lengths[i:i + 8]) for i in range(0, len(prompts), 8)]
        cases.append(_peer_case("hf-static-8", peer, session.info.weights_bytes, batches, prompts[0],
                                note="left-padded batches of 8; each runs until its longest request; "
                                     "useful tokens counted", min_s=opts.min_measure_s))
        results = run_cases(cases, opts.repeats, log, "batching")
    finally:
        session.close()
        peer.close()
    ref = results[0].outputs
    results[0].outputs_match_reference = None
    for r in results[1:]:
        r.outputs_match_reference = r.outputs == ref
    return results


def _play(session: EngineSession, msgs: list[tuple[str, str]], reply_tokens: int) -> str:
    fin, _ = session.run([GenerateRequest(messages=tuple(msgs),
                                          sampling=SamplingParams(max_new_tokens=reply_tokens, ignore_eos=True))])
    return next(iter(fin.values())).text


def suite_prefix(opts: BenchOptions, log: Log) -> list[RunResult]:
    """TTFT of a chat's first turn, of its tenth with the earlier turns cached, and of the tenth
    without reuse. Every row is warmed by an unrelated request first."""
    turns, reply = opts.prefix_turns, 24 if opts.quick else 48
    session = EngineSession(opts.spec, EngineConfig(kv_cache=KVCacheMode.ON))
    sampling = SamplingParams(max_new_tokens=reply, ignore_eos=True)
    try:
        log(f"prefix: playing a {turns}-turn conversation")
        history: list[tuple[str, str]] = []
        for i in range(turns - 1):
            history.append(("user", f"Good sir, tell me the {i + 1}th thing thou knowest of the king."))
            history.append(("assistant", _play(session, history, reply)))
        last = tuple(history + [("user", "And what of the queen?")])
        first = (history[0],)
        warm = [tuple(_prompts(_tokenizer(opts.spec), 1)[0])]

        def case(name: str, cfg: EngineConfig, msgs, refill: bool) -> Case:
            def prepare() -> None:
                session.configure(EngineConfig(kv_cache=KVCacheMode.ON))  # empties the prefix cache
                session.configure(cfg)
                session.run(greedy_requests([list(warm[0])], [8]))
                if refill:  # the conversation so far, as a live chat would have cached it
                    _play(session, history[:-1], reply)

            def measure() -> RunResult:
                fin, wall = session.run([GenerateRequest(messages=msgs, sampling=sampling)])
                res = engine_result(name, cfg, session, fin, wall)
                f = next(iter(fin.values()))
                res.extra["prompt_tokens"] = f.stats.prompt_tokens
                res.extra["cached_prompt_tokens"] = f.stats.cached_prompt_tokens
                return res

            return Case(name, measure, prepare)

        cases = [
            case("turn-1", EngineConfig(kv_cache=KVCacheMode.ON), first, refill=False),
            case("turn-10", EngineConfig(kv_cache=KVCacheMode.PREFIX), last, refill=True),
            case("turn-10-no-reuse", EngineConfig(kv_cache=KVCacheMode.ON), last, refill=False),
        ]
        return run_cases(cases, opts.repeats, log, "prefix")
    finally:
        session.close()


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

    tok = _tokenizer(opts.spec)
    eval_ids = tok.encode(opts.eval_text)[: 2048 if opts.quick else 8192]
    prompts = _prompts(tok, 4)
    n = 48 if opts.quick else 128
    session = EngineSession(opts.spec, sequential_config())
    skipped: list[RunResult] = []
    levels = []
    for level in Quantisation:
        why = _level_available(level, opts.spec)
        if why:
            log(f"quant: {level.value} skipped: {why}")
            skipped.append(RunResult(name=level.value, config={"quantisation": level.value}, extra={"skipped": why}))
        else:
            levels.append(level)
    try:
        requests = greedy_requests(prompts, [n] * len(prompts))
        cases = [_engine_case(level.value, sequential_config().with_(quantisation=level), session, requests,
                              prompts[0], opts, decode_roofline=True) for level in levels]
        results = run_cases(cases, opts.repeats, log, "quant")
    finally:
        session.close()
    # quality: measured once per level, outside the timed runs (on one torch thread, see
    # engine.quality.level_quality)
    _quality(opts, levels, results, eval_ids)
    return results + skipped


def _quality(opts: BenchOptions, levels: list, results: list[RunResult], eval_ids: list[int]) -> None:
    from engine.quality import agreement, level_quality

    reference, ref_ppl = results[0].outputs, None
    flat_ref = [t for o in reference for t in o]
    for level, res in zip(levels, results):
        quality = level_quality(opts.spec, level, eval_ids)
        res.extra["perplexity"] = quality.perplexity
        res.extra["skipped_layers"] = quality.skipped_layers
        ref_ppl = ref_ppl or res.extra["perplexity"]
        agree = [agreement(r, o) for r, o in zip(reference, res.outputs)]
        res.extra["agreement"] = sum(a.share * len(r) for a, r in zip(agree, reference)) / len(flat_ref)
        res.extra["first_divergence"] = min((a.first_divergence for a in agree if a.first_divergence is not None),
                                            default=None)
        res.extra["perplexity_ratio"] = res.extra["perplexity"] / ref_ppl
        res.outputs_match_reference = res.outputs == reference


def suite_spec(opts: BenchOptions, log: Log) -> list[RunResult]:
    from engine.config import SpeculativeConfig, SpeculativeMode

    if not opts.draft:
        raise RuntimeError("the spec suite needs a draft model (--draft)")
    tok = _tokenizer(opts.spec)
    n = 64 if opts.quick else 160
    count = 4 if opts.quick else 8
    prompts = _prompts(tok, count)
    lengths = [n] * count

    def spec_cfg(mode, k=4, adaptive=False, batching=False):
        base = continuous_config(8) if batching else sequential_config()
        return base.with_(speculative=SpeculativeConfig(mode=mode, num_draft_tokens=k, adaptive=adaptive,
                                                        draft_model=opts.draft))

    rows = [
        ("target-only", sequential_config()),
        ("target-only-stepwise", stepwise(sequential_config())),
        ("draft-k4", spec_cfg(SpeculativeMode.DRAFT, 4)),
        ("draft-adaptive", spec_cfg(SpeculativeMode.DRAFT, 4, adaptive=True)),
        ("ngram", spec_cfg(SpeculativeMode.NGRAM, 4)),
        ("continuous-8", continuous_config(8)),
        ("continuous-8-spec", spec_cfg(SpeculativeMode.DRAFT, 4, batching=True)),
    ]
    session = EngineSession(opts.spec, sequential_config())
    peer = _peer(opts, draft=opts.draft)
    try:
        requests = greedy_requests(prompts, lengths)
        cases = [_engine_case(name, cfg, session, requests, prompts[0], opts) for name, cfg in rows]
        weights = peer.loaded["weights_bytes"] + peer.loaded["draft_weights_bytes"]
        cases.append(_peer_case("hf-assisted", peer, weights, [([p], [n]) for p in prompts],
                                prompts[0], assisted=True, k=4, min_s=opts.min_measure_s))
        results = run_cases(cases, opts.repeats, log, "spec")
    finally:
        session.close()
        peer.close()
    ref = results[0].outputs
    for r in results[1:]:
        r.outputs_match_reference = r.outputs == ref
    return results


SUITES["quant"] = suite_quant
SUITES["spec"] = suite_spec
