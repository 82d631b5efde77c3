"""Training loop for the demo model pair: random windows of a token stream,
AdamW with warm-up and a cosine schedule that follows time as well as steps,
optional distillation from a teacher's logits, a CSV log and a progress line."""

from __future__ import annotations

import contextlib
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Phase:
    steps: int
    batch: int
    lr: float
    warmup_steps: int
    dev_every: int  # steps between dev-set losses (best weights are kept)
    patience: int  # stop after this many dev losses without a new best


class Progress:
    """A one-line progress report on stderr: step/total, loss, lr, elapsed, ETA."""

    def __init__(self, label: str, total: int, deadline: float | None):
        self.label, self.total, self.deadline = label, total, deadline
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_print = -math.inf
        self.last_step = -1

    def update(self, step: int, loss: float, lr: float, *, final: bool = False) -> None:
        now = time.monotonic()
        if final and step == self.last_step and not self.tty:
            return  # this step's line is already out
        if not final and now - self.last_print < (0.5 if self.tty else 30.0):
            return
        self.last_print, self.last_step = now, step
        elapsed = now - self.start
        eta = (self.total - step) * elapsed / max(step, 1)
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - now))
        width = 24
        filled = int(width * step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = (f"[{self.label}] [{bar}] {step}/{self.total} loss {loss:.3f} lr {lr:.1e} "
                f"{fmt_s(elapsed)} elapsed, ETA {fmt_s(eta)}")
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def lr_at(progress: float, phase: Phase, step: int) -> float:
    """Linear warm-up, then cosine from ``lr`` down to ``lr / 10`` as progress goes 0 -> 1."""
    if step < phase.warmup_steps:
        return phase.lr * (step + 1) / phase.warmup_steps
    progress = min(1.0, max(0.0, progress))
    return phase.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model, lr: float, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def sample_batch(stream: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Random windows ``[batch, length]`` of the token stream (positions drawn on the CPU generator)."""
    starts = torch.randint(0, stream.numel() - length, (batch, 1), generator=gen).to(stream.device)
    return stream[starts + torch.arange(length, device=stream.device)]


def _losses(model, teacher, batch: torch.Tensor, autocast) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce) of ``model`` on token windows ``[batch, context + 1]``.

    With a teacher the loss is KL(teacher || model) at temperature 1 (distillation);
    without one it is the next-token cross-entropy.
    """
    inputs, labels = batch[:, :-1], batch[:, 1:]
    with autocast:
        logits = model(input_ids=inputs).logits  # [batch, context, vocab]
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=inputs).logits
    logp = torch.log_softmax(logits.float(), dim=-1).flatten(0, 1)  # [batch * context, vocab]
    ce = torch.nn.functional.nll_loss(logp, labels.flatten())
    if teacher is None:
        return ce, torch.zeros_like(ce), ce
    teacher_logp = torch.log_softmax(teacher_logits.float(), dim=-1).flatten(0, 1)
    kl = torch.nn.functional.kl_div(logp, teacher_logp, log_target=True, reduction="batchmean")
    return kl, kl, ce


@torch.no_grad()
def dev_loss(model, teacher, dev: torch.Tensor, batch: int, autocast) -> float:
    model.eval()
    total = sum(_losses(model, teacher, chunk, autocast)[0].item() * len(chunk) for chunk in dev.split(batch))
    model.train()
    return total / len(dev)


def dev_windows(stream: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` evenly spaced windows ``[count, length]`` of a dev token stream."""
    count = max(1, min(count, stream.numel() // length))
    starts = torch.linspace(0, stream.numel() - length, count).long()
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def train_phase(model, stream: torch.Tensor, phase: Phase, *, context: int, device: torch.device,
                deadline: float | None, log_path: Path, label: str, seed: int, log_every: int,
                dev: torch.Tensor | None = None, teacher=None) -> dict:
    """Train ``model`` on random windows of ``stream``; with ``teacher``, by distillation.

    Every ``phase.dev_every`` steps the loss on the ``dev`` windows is measured;
    the weights with the lowest dev loss are kept, and training stops after
    ``phase.patience`` measurements without a new best, at ``phase.steps``, or
    at ``deadline`` (``time.monotonic()``), whichever comes first.
    """
    gen = torch.Generator().manual_seed(seed)
    stream = stream.to(device)
    dev = dev.to(device) if dev is not None else None
    model.to(device).train()
    optimizer = make_optimizer(model, phase.lr, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    progress = Progress(label, phase.steps, deadline)
    start = time.monotonic()
    columns = ["step", "tokens", "loss", "lr", "elapsed_s", "dev_loss"] + (["kl", "ce"] if teacher is not None else [])
    sums = torch.zeros(3, device=device)  # loss, kl, ce summed since the last log row
    last_loss = lr = float("nan")
    best = {"loss": math.inf, "step": 0, "state": None}
    stop_reason = "steps"
    misses = step = logged = 0
    with open(log_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for step in range(1, phase.steps + 1):
            time_frac = 0.0 if deadline is None else (time.monotonic() - start) / max(deadline - start, 1e-9)
            lr = lr_at(max((step - 1) / phase.steps, time_frac), phase, step - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, kl, ce = _losses(model, teacher, sample_batch(stream, phase.batch, context + 1, gen), autocast)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sums += torch.stack([loss.detach(), kl.detach(), ce.detach()])
            out_of_time = deadline is not None and time.monotonic() >= deadline
            last = step == phase.steps or out_of_time
            check_dev = dev is not None and (step % phase.dev_every == 0 or last)
            if not (check_dev or last or step % log_every == 0):
                continue
            means = (sums / (step - logged)).tolist()
            sums.zero_()
            logged, last_loss = step, means[0]
            dev_text = ""
            if check_dev:
                current = dev_loss(model, teacher, dev, phase.batch, autocast)
                dev_text = f"{current:.4f}"
                if current < best["loss"]:
                    misses = 0
                    best = {"loss": current, "step": step,
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                else:
                    misses += 1
            writer.writerow([step, step * phase.batch * context, f"{means[0]:.4f}", f"{lr:.3e}",
                             f"{time.monotonic() - start:.1f}", dev_text]
                            + ([f"{means[1]:.4f}", f"{means[2]:.4f}"] if teacher is not None else []))
            fh.flush()
            progress.update(step, last_loss, lr)
            if out_of_time:
                stop_reason = "time"
                break
            if misses >= phase.patience:
                stop_reason = "dev loss stopped improving"
                break
    progress.update(step, last_loss, lr, final=True)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    seconds = time.monotonic() - start
    return {"steps_planned": phase.steps, "steps_done": step, "batch": phase.batch, "context": context,
            "lr": phase.lr, "warmup_steps": phase.warmup_steps, "final_loss": last_loss,
            "seconds": seconds, "seconds_per_step": seconds / max(step, 1), "stop_reason": stop_reason,
            "stopped_by_time": stop_reason == "time", "kept_step": best["step"] or step,
            "best_dev_loss": best["loss"] if best["state"] is not None else None,
            "dev_windows": 0 if dev is None else len(dev), "tokens_seen": step * phase.batch * context}
