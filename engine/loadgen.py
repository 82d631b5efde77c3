"""Load generator: simulated users sending prompts at a chosen rate, with varied output lengths.

Open-loop Poisson arrivals at `rate_per_s`, capped at `users` requests in flight (each user
has at most one request outstanding). It only submits; whoever consumes the engine's events
calls `notify_finished()` so a user becomes free again. Runs on its own thread and waits on
an Event (so stop() wakes it at once), never sleep-polling.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

from engine.config import GenerateRequest, SamplingParams

DEFAULT_PROMPTS = (
    "Good morrow, friend. What news from the court?",
    "Speak, and tell me of the battle.",
    "Why dost thou weep, fair lady?",
    "What say you to the king's decree?",
    "Where hast thou been this long night?",
    "Wilt thou be true to me, or false?",
    "How fares the prince since last we met?",
    "Tell me, what is honour?",
)

TAG = "loadgen"


@dataclass(frozen=True)
class LoadSpec:
    users: int = 4
    rate_per_s: float = 2.0
    min_new_tokens: int = 16
    max_new_tokens: int = 96
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    chat: bool = True
    temperature: float = 0.0
    seed: int = 0
    max_requests: int | None = None  # stop after this many submissions

    def __post_init__(self) -> None:
        if self.users < 1 or self.rate_per_s <= 0:
            raise ValueError("users must be >= 1 and rate_per_s > 0")
        if not 1 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("need 1 <= min_new_tokens <= max_new_tokens")
        if not self.prompts:
            raise ValueError("the prompt set is empty")


@dataclass
class LoadStats:
    submitted: int = 0
    finished: int = 0
    in_flight: set[str] = field(default_factory=set)


class LoadGenerator:
    def __init__(self, submit: Callable[[GenerateRequest], str], spec: LoadSpec) -> None:
        self._submit = submit
        self.spec = spec
        self.stats = LoadStats()
        self._rng = random.Random(spec.seed)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._id_prefix = os.urandom(2).hex()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="workbench-loadgen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify_finished(self, request_id: str) -> None:
        with self._lock:
            if request_id in self.stats.in_flight:
                self.stats.in_flight.discard(request_id)
                self.stats.finished += 1
        self._wake.set()

    def make_request(self) -> GenerateRequest:
        prompt = self._rng.choice(self.spec.prompts)
        n = self._rng.randint(self.spec.min_new_tokens, self.spec.max_new_tokens)
        sampling = SamplingParams(temperature=self.spec.temperature, max_new_tokens=n,
                                  seed=self._rng.randrange(2**31))
        if self.spec.chat:
            return GenerateRequest(messages=(("user", prompt),), sampling=sampling, tag=TAG)
        return GenerateRequest(prompt=prompt, sampling=sampling, tag=TAG)

    def _run(self) -> None:
        while not self._stop.is_set():
            # next arrival of a Poisson process
            if self._stop.wait(self._rng.expovariate(self.spec.rate_per_s)):
                return
            # a free user is needed; wait for a finish if all are busy
            while True:
                with self._lock:
                    free = len(self.stats.in_flight) < self.spec.users
                if free or self._stop.is_set():
                    break
                self._wake.wait()
                self._wake.clear()
            if self._stop.is_set():
                return
            # the id is ours before the engine sees the request, so even an instant finish
            # (notify_finished racing submit) frees its user
            with self._lock:
                self.stats.submitted += 1
                rid = f"{TAG}-{self._id_prefix}-{self.stats.submitted}"
                self.stats.in_flight.add(rid)
                done = self.spec.max_requests is not None and self.stats.submitted >= self.spec.max_requests
            self._submit(replace(self.make_request(), request_id=rid))
            if done:
                return
