"""Break-even advisor: is speculation paying off, and which k is best right now?

With per-token acceptance rate a (assumed i.i.d., as in Leviathan et al. 2023, section 3.3)
and a draft step costing c target steps, one verify step with k drafts yields on average
(1 - a^(k+1)) / (1 - a) tokens and costs k*c + 1 target steps, so the expected speedup over
plain decoding is (1 - a^(k+1)) / ((1 - a) * (k*c + 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

K_RANGE = tuple(range(1, 9))


def expected_tokens_per_verify(a: float, k: int) -> float:
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def expected_speedup(a: float, c: float, k: int) -> float:
    return expected_tokens_per_verify(a, k) / (k * c + 1.0)


@dataclass(frozen=True)
class Advice:
    acceptance_rate: float
    cost_ratio: float  # draft step time / target step time
    speedup_by_k: tuple[float, ...]  # for k = 1..8
    recommended_k: int
    pays_off: bool

    @property
    def best_speedup(self) -> float:
        return self.speedup_by_k[self.recommended_k - 1]


def advise(acceptance_rate: float, cost_ratio: float) -> Advice:
    a = min(max(acceptance_rate, 0.0), 1.0)
    c = max(cost_ratio, 0.0)
    speedups = tuple(expected_speedup(a, c, k) for k in K_RANGE)
    best = max(K_RANGE, key=lambda k: speedups[k - 1])
    return Advice(a, c, speedups, best, speedups[best - 1] > 1.0)


def next_k(k: int, num_accepted: int, k_min: int = 1, k_max: int = 16) -> int:
    """The adaptive heuristic (as in transformers' assisted generation): +2 when every draft
    token was accepted, -1 otherwise."""
    return min(k + 2, k_max) if num_accepted == k else max(k - 1, k_min)
