"""Held-out figures for the demo model pair: bits per character, greedy
speculative acceptance, decode-step time, and a few sample replies.

Pure cores (:func:`simulate_acceptance`, :func:`score_chunks`) are separate
from the torch handlers so they can be tested with plain data.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from engine.runner import cache_argument


@dataclass(frozen=True)
class EvalSettings:
    bpc_window: int  # tokens per forward when scoring the held-out text
    bpc_overlap: int  # unscored context tokens carried into each window
    bpc_batch: int
    num_prompts: int  # held-out prompts for the acceptance simulation
    prompt_tokens: int
    new_tokens: int  # tokens committed per prompt
    draft_k: int  # draft tokens proposed per verify step
    gen_batch: int
    timing_context: int  # context length for the decode-step timing
    timing_steps: int  # timed decode steps per model
    sample_tokens: int  # max new tokens of each sample reply


# Conversations for the card's sample replies: (mode, messages).
SAMPLE_CHATS: tuple[tuple[str, tuple[dict[str, str], ...]], ...] = (
    ("greedy", ({"role": "user", "content": "My lord, I came to see your father's funeral."},)),
    ("sampled", ({"role": "user", "content": "What news from the court, my lord?"},)),
    (
        "sampled",
        (
            {"role": "system", "content": "A room in the castle"},
            {"role": "user", "content": "Good morrow, my lord. How fares your grace?"},
            {"role": "assistant", "content": "Well, I thank you, Horatio."},
            {"role": "user", "content": "The king doth wake to-night and takes his rouse."},
        ),
    ),
)


def log(message: str) -> None:
    print(f"[train-demo] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- pure cores


def score_chunks(num_tokens: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows that score every token of ``[bos] + ids`` exactly once.

    Returns ``(start, first_target, end)`` index triples into the stream
    ``[bos] + ids`` (length ``num_tokens + 1``): the model reads
    ``stream[start:end - 1]`` and is scored on ``stream[first_target:end]``.
    """
    if window <= overlap + 1:
        raise ValueError("window must exceed overlap + 1")
    step = window - overlap
    chunks = []
    first = 1
    end_of_stream = num_tokens + 1
    while first < end_of_stream:
        end = min(first + step, end_of_stream)
        start = max(0, first - 1 - overlap)
        chunks.append((start, first, end))
        first = end
    return chunks


def simulate_acceptance(continuation: list[list[int]], proposals: list[list[list[int]]], new_tokens: int) -> dict:
    """Greedy speculative decoding, replayed from precomputed greedy choices.

    ``continuation[r]`` is the target's greedy continuation of prompt ``r``
    (at least ``new_tokens + k`` tokens); ``proposals[r][p]`` the draft's ``k``
    greedy tokens from the context ``prompt + continuation[:p]``. Each verify
    step drafts ``k`` tokens, accepts the longest prefix that equals the
    target's greedy choice, and commits it plus one token from the target, so
    the committed text is always the target's greedy text.
    """
    k = len(proposals[0][0]) if proposals and proposals[0] else 0
    accepted = drafted = rounds = committed = 0
    accepted_at = [0] * k
    for cont, props in zip(continuation, proposals, strict=True):
        pos = 0
        while pos < new_tokens:
            guess = props[pos]
            num_ok = 0
            while num_ok < k and guess[num_ok] == cont[pos + num_ok]:
                accepted_at[num_ok] += 1
                num_ok += 1
            accepted += num_ok
            drafted += k
            rounds += 1
            committed += num_ok + 1
            pos += num_ok + 1
    return {
        "acceptance_rate": accepted / drafted if drafted else float("nan"),
        "accepted_tokens": accepted,
        "draft_tokens": drafted,
        "verify_steps": rounds,
        "mean_tokens_per_verify": committed / rounds if rounds else float("nan"),
        "acceptance_per_position": [a / rounds if rounds else float("nan") for a in accepted_at],
    }


# ------------------------------------------------------------ torch handlers

def forward(model, input_ids: torch.Tensor, cache: DynamicCache | None = None, logits_to_keep: int = 0) -> torch.Tensor:
    """Logits ``[batch, seq or logits_to_keep, vocab]``; ``cache`` (if any) is extended in place."""
    kwargs: dict = {"input_ids": input_ids, "logits_to_keep": logits_to_keep}
    if cache is not None:
        kwargs[cache_argument(type(model))] = cache
        kwargs["use_cache"] = True
    return model(**kwargs).logits


def crop(cache: DynamicCache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def load_pair(out_dir: Path, device: torch.device):
    tokenizer = AutoTokenizer.from_pretrained(out_dir / "target")
    models = []
    for name in ("target", "draft"):
        model = AutoModelForCausalLM.from_pretrained(out_dir / name, dtype=torch.float32)
        models.append(model.to(device).eval())
    return tokenizer, models[0], models[1]


@torch.inference_mode()
def bits_per_char(model, docs: list[list[int]], num_chars: int, bos_id: int, s: EvalSettings, device) -> dict:
    """Sum of token NLL (nats) over every held-out token / characters / ln 2."""
    jobs = []
    for ids in docs:
        stream = [bos_id, *ids]
        for start, first, end in score_chunks(len(ids), s.bpc_window, s.bpc_overlap):
            jobs.append((stream[start : end - 1], stream[first:end], first - 1 - start))
    total_nll = 0.0
    num_tokens = 0
    for i in range(0, len(jobs), s.bpc_batch):
        batch = jobs[i : i + s.bpc_batch]
        width = max(len(inp) for inp, _, _ in batch)
        inputs = torch.full((len(batch), width), bos_id, dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (inp, tgt, offset) in enumerate(batch):
            inputs[row, : len(inp)] = torch.tensor(inp)
            targets[row, offset : offset + len(tgt)] = torch.tensor(tgt)
        logits = forward(model, inputs.to(device)).float()  # [batch, width, vocab]
        nll = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=-100, reduction="sum"
        )
        total_nll += nll.item()
        num_tokens += int((targets != -100).sum())
    return {
        "bits_per_char": total_nll / num_chars / math.log(2),
        "nats_per_token": total_nll / num_tokens,
        "num_tokens": num_tokens,
        "num_chars": num_chars,
    }


@torch.inference_mode()
def greedy_tokens(model, prompts: torch.Tensor, num_new: int) -> torch.Tensor:
    """Greedy continuation ``[batch, num_new]`` of equal-length prompts, with a KV cache."""
    cache = DynamicCache()
    logits = forward(model, prompts, cache, logits_to_keep=1)
    out = []
    for _ in range(num_new):
        token = logits[:, -1].argmax(-1, keepdim=True)  # [batch, 1]
        out.append(token)
        logits = forward(model, token, cache, logits_to_keep=1)
    return torch.cat(out, dim=1)


@torch.inference_mode()
def draft_proposals(draft, prompts: torch.Tensor, continuation: torch.Tensor, num_pos: int, k: int) -> torch.Tensor:
    """The draft's ``k`` greedy tokens from every context ``prompt + continuation[:p]``.

    Returns ``[batch, num_pos, k]``; one cached pass that proposes, rolls the
    cache back, and appends the target's next token.
    """
    cache = DynamicCache()
    last = forward(draft, prompts, cache, logits_to_keep=1)[:, -1]
    out = torch.empty(prompts.shape[0], num_pos, k, dtype=torch.long, device=prompts.device)
    for pos in range(num_pos):
        base = cache.get_seq_length()
        token = last.argmax(-1, keepdim=True)
        out[:, pos, 0] = token[:, 0]
        for j in range(1, k):
            token = forward(draft, token, cache, logits_to_keep=1)[:, -1].argmax(-1, keepdim=True)
            out[:, pos, j] = token[:, 0]
        crop(cache, base)
        last = forward(draft, continuation[:, pos : pos + 1], cache, logits_to_keep=1)[:, -1]
    return out


def acceptance(target, draft, prompts: torch.Tensor, s: EvalSettings) -> dict:
    conts, props = [], []
    for i in range(0, prompts.shape[0], s.gen_batch):
        chunk = prompts[i : i + s.gen_batch]
        cont = greedy_tokens(target, chunk, s.new_tokens + s.draft_k)
        conts.append(cont.cpu())
        props.append(draft_proposals(draft, chunk, cont, s.new_tokens, s.draft_k).cpu())
    result = simulate_acceptance(torch.cat(conts).tolist(), torch.cat(props).tolist(), s.new_tokens)
    result.update(num_prompts=int(prompts.shape[0]), prompt_tokens=int(prompts.shape[1]),
                  new_tokens=s.new_tokens, draft_k=s.draft_k)
    return result


@torch.inference_mode()
def decode_step_times(models: dict, context: torch.Tensor, steps: int, device: torch.device) -> dict:
    """Median single-token decode step (batch 1, KV cache) per model, interleaved in blocks.

    Each step feeds one token at a context of ``len(context)`` tokens and then
    rolls the cache back, so every timed step sees the same context length.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    state = {}
    for name, model in models.items():
        cache = DynamicCache()
        forward(model, context[None, :-1], cache, logits_to_keep=1)
        state[name] = (model, cache, [])
    block = 10
    for block_index in range(-1, max(1, steps // block)):  # block -1 is warm-up
        for model, cache, times in state.values():
            token = context[None, -1:]
            base = cache.get_seq_length()
            for _ in range(block):
                sync()
                t0 = time.perf_counter()
                logits = forward(model, token, cache, logits_to_keep=1)
                token = logits[:, -1].argmax(-1, keepdim=True)
                sync()
                if block_index >= 0:
                    times.append(time.perf_counter() - t0)
                crop(cache, base)
    result = {}
    for name, (_, _, times) in state.items():
        times.sort()
        result[name] = {
            "median_ms": statistics.median(times) * 1e3,
            "p10_ms": times[len(times) // 10] * 1e3,
            "p90_ms": times[(len(times) * 9) // 10] * 1e3,
            "num_steps": len(times),
        }
    return result


@torch.inference_mode()
def sample_replies(tokenizer, model, max_new_tokens: int, seed: int, device) -> list[dict]:
    """Replies to :data:`SAMPLE_CHATS` through the chat template and the saved generation config."""
    samples = []
    for mode, messages in SAMPLE_CHATS:
        prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        config = copy.deepcopy(model.generation_config)
        config.max_new_tokens = max_new_tokens
        if mode == "greedy":
            config.do_sample, config.temperature, config.top_k = False, 1.0, None
        torch.manual_seed(seed)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, tokenizer=tokenizer)
        reply = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        samples.append({"mode": mode, "messages": list(messages), "prompt": prompt, "reply": reply.rstrip("\n")})
    return samples


def prompt_windows(docs: list[list[int]], count: int, length: int, seed: int) -> torch.Tensor:
    """``count`` token windows of ``length`` at seeded random places of the held-out docs."""
    gen = torch.Generator().manual_seed(seed)
    usable = [d for d in docs if len(d) > length]
    if not usable:
        raise ValueError("held-out text is too short for the acceptance prompts")
    rows = []
    for i in range(count):
        doc = usable[i % len(usable)]
        start = int(torch.randint(0, len(doc) - length, (1,), generator=gen))
        rows.append(doc[start : start + length])
    return torch.tensor(rows, dtype=torch.long)


def _cpu_busy_s() -> tuple[float, float] | None:
    """(seconds all CPUs were busy, seconds this process ran), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    own = os.times()
    return busy, own.user + own.system


def other_cpu_load(before: tuple[float, float] | None, after: tuple[float, float] | None, wall_s: float):
    """Average number of cores kept busy by *other* programs between two :func:`_cpu_busy_s` readings."""
    if before is None or after is None or wall_s <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall_s)


def evaluate(out_dir: Path, val_texts: list[str], s: EvalSettings, device: torch.device, seed: int) -> dict:
    """All held-out figures for the pair saved under ``out_dir``."""
    t0 = time.monotonic()
    stage_s: dict[str, float] = {}
    tokenizer, target, draft = load_pair(out_dir, device)
    docs = [enc.ids for enc in tokenizer.backend_tokenizer.encode_batch(val_texts, add_special_tokens=False)]
    num_chars = sum(len(t) for t in val_texts)
    result: dict = {}
    for name, model in (("target", target), ("draft", draft)):
        log(f"eval: bits per character of the {name} over {num_chars} held-out characters")
        start = time.monotonic()
        result[name] = bits_per_char(model, docs, num_chars, tokenizer.bos_token_id, s, device)
        stage_s[f"bpc_{name}"] = time.monotonic() - start

    log(f"eval: greedy acceptance over {s.num_prompts} prompts, k={s.draft_k}")
    start = time.monotonic()
    prompts = prompt_windows(docs, s.num_prompts, s.prompt_tokens, seed).to(device)
    result["acceptance"] = acceptance(target, draft, prompts, s)
    stage_s["acceptance"] = time.monotonic() - start

    log("eval: decode-step timing")
    start = time.monotonic()
    busy_before = _cpu_busy_s()
    context = prompt_windows(docs, 1, s.timing_context, seed + 1)[0].to(device)
    times = decode_step_times({"target": target, "draft": draft}, context, s.timing_steps, device)
    others = other_cpu_load(busy_before, _cpu_busy_s(), time.monotonic() - start)
    for name in ("target", "draft"):
        result[name]["decode_step"] = times[name]
    result["decode_step_ratio"] = times["target"]["median_ms"] / times["draft"]["median_ms"]
    # Cores that other programs kept busy while timing: on a shared CPU they inflate the times.
    result["decode_timing"] = {"context_tokens": s.timing_context, "batch": 1, "dtype": "float32", "kv_cache": True,
                               "other_programs_cpu_cores": others}
    stage_s["decode_timing"] = time.monotonic() - start

    log("eval: sample replies")
    start = time.monotonic()
    result["samples"] = sample_replies(tokenizer, target, s.sample_tokens, seed, device)
    stage_s["samples"] = time.monotonic() - start
    result["stage_s"] = stage_s
    result["eval_s"] = time.monotonic() - t0
    return result
