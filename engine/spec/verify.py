"""Accepting draft tokens: exact match when greedy, rejection sampling otherwise.

Rejection sampling (Leviathan et al. 2023; Chen et al. 2023) keeps the output distributed
exactly as the target's: accept draft token x with probability min(1, p(x) / q(x)); on the
first rejection, draw from the residual max(0, p - q) renormalised; if every draft token is
accepted, draw one more token from the target's next distribution.
"""

from __future__ import annotations

import torch


def accept_greedy(draft: list[int], target_logits: torch.Tensor) -> list[int]:
    """target_logits: [k+1, vocab]. Returns accepted drafts plus the target's own next token."""
    choice = target_logits.argmax(dim=-1).tolist()  # [k+1]
    out = []
    for i, tok in enumerate(draft):
        if tok != choice[i]:
            out.append(choice[i])
            return out
        out.append(tok)
    out.append(choice[len(draft)])
    return out


def accept_sampling(draft: list[int], p: torch.Tensor, q: torch.Tensor | None,
                    generator: torch.Generator) -> list[int]:
    """p: target probabilities [k+1, vocab]; q: draft probabilities [k, vocab], or None when the
    drafter is deterministic (n-gram lookup: q is one-hot at the drafted token)."""
    p = p.float().cpu()
    out = []
    for i, tok in enumerate(draft):
        if q is None:
            q_row = torch.zeros_like(p[i])
            q_row[tok] = 1.0
        else:
            q_row = q[i].float().cpu()
        ratio = p[i, tok] / q_row[tok] if q_row[tok] > 0 else torch.tensor(0.0)
        u = torch.rand((), generator=generator)
        if u < torch.clamp(ratio, max=1.0):
            out.append(tok)
            continue
        residual = torch.clamp(p[i] - q_row, min=0.0)
        total = residual.sum()
        dist = residual / total if total > 0 else p[i]
        out.append(int(torch.multinomial(dist, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(p[len(draft)], 1, generator=generator)))
    return out
