"""Prometheus metrics of a served engine, under vLLM's names where the meaning is the same.

One consumer of the engine's events (`record`, called for every event by the event hub),
writing to its own CollectorRegistry so several servers in one process never collide.
vLLM-named series carry a `model_name` label like vLLM's. What vLLM lacks is under
`workbench:*`: the live configuration as labels, weight bytes, quantisation, batch sizes.

vllm:kv_cache_usage_perc: vLLM reports the used fraction of its preallocated block pool. This
engine has no fixed pool: its cache grows in the memory of the model's device. So the fraction
reported is KV-cache bytes / (KV-cache bytes + memory still available on that device), as a
0..1 ratio like vLLM's: 1.0 means the cache has taken every byte it could get.
"""

from __future__ import annotations

import threading

import psutil
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine import events as ev

TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0,
               120.0, 300.0)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# no `*_created` series (vLLM turns them off too): they double the output and no dashboard reads them
disable_created_metrics()


def available_device_bytes(device: str) -> int | None:
    """Memory still free on the device that holds the cache (None when unknown)."""
    if device.startswith("cuda"):
        import torch

        try:
            free, _total = torch.cuda.mem_get_info(torch.device(device))
        except (RuntimeError, ValueError):
            return None
        return int(free)
    return int(psutil.virtual_memory().available)


def kv_usage_fraction(kv_bytes: int, available_bytes: int | None) -> float:
    if available_bytes is None:
        return 0.0 if kv_bytes == 0 else float("nan")
    total = kv_bytes + available_bytes
    return kv_bytes / total if total > 0 else 0.0


class ServeMetrics:
    def __init__(self, model_name: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._num_waiting = 0
        self._kv_bytes = 0
        self._device = "cpu"
        self._model_name = ""
        self._max_batch = 0  # written on the hub thread only
        r = self.registry
        m = ("model_name",)
        self.running = Gauge("vllm:num_requests_running", "Requests in the engine that are not waiting.",
                             m, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting for a batch slot.", m, registry=r)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc",
                              "KV-cache bytes / (KV-cache bytes + memory still available on the model's "
                              "device); 0..1.", m, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests.", m, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens of finished requests.", m,
                                         registry=r)
        self.request_success = Counter("vllm:request_success", "Finished requests by finish reason.",
                                       m + ("finished_reason",), registry=r)
        self.prefix_queries = Counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                                      m, registry=r)
        self.prefix_hits = Counter("vllm:prefix_cache_hits", "Prompt tokens served from the prefix cache.", m,
                                   registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Submit to first output token (queue wait "
                              "included).", m, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Gaps between a request's token emissions.", m,
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Submit to finish.", m, buckets=E2E_BUCKETS,
                             registry=r)
        self.request_prompt = Histogram("vllm:request_prompt_tokens", "Prompt tokens per request.", m,
                                        buckets=TOKEN_BUCKETS, registry=r)
        self.request_generation = Histogram("vllm:request_generation_tokens", "Generated tokens per request.", m,
                                            buckets=TOKEN_BUCKETS, registry=r)
        self.iteration_tokens = Histogram("vllm:iteration_tokens_total", "Tokens computed per engine step "
                                          "(prompt + output).", m, buckets=TOKEN_BUCKETS, registry=r)
        self.spec_drafts = Counter("vllm:spec_decode_num_drafts", "Verify steps that had a draft.", m, registry=r)
        self.spec_draft_tokens = Counter("vllm:spec_decode_num_draft_tokens", "Draft tokens proposed.", m,
                                         registry=r)
        self.spec_accepted = Counter("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.", m,
                                     registry=r)
        self.spec_accepted_pos = Counter("vllm:spec_decode_num_accepted_tokens_per_pos",
                                         "Accepted draft tokens by position in the draft.", m + ("position",),
                                         registry=r)
        self.batch_size = Histogram("workbench:step_batch_size", "Sequences computed per engine step.", m,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.max_batch_seen = Gauge("workbench:max_step_batch_size", "Largest batch of one step so far.", m,
                                    registry=r)
        self.weights_bytes = Gauge("workbench:model_weights_bytes", "Bytes of the loaded weights (quantised "
                                   "sizes; draft model included).", m, registry=r)
        self.kv_bytes = Gauge("workbench:kv_cache_bytes", "Bytes held by running sequences' cache tensors.", m,
                              registry=r)
        self.rss_bytes = Gauge("workbench:process_rss_bytes", "Resident set size of the server process.",
                               registry=r)
        self.tokens_per_s = Gauge("workbench:tokens_per_second", "Output tokens per second, engine-wide, "
                                  "5 s sliding window.", m, registry=r)
        self.http_clients = Gauge("workbench:http_requests_in_flight", "HTTP generation requests being "
                                  "answered.", registry=r)
        self.config_info = Info("workbench:config", "The engine's current configuration.", registry=r)
        self.model_info = Info("workbench:model", "The loaded model.", registry=r)
        self.set_model_name(model_name)

    # ---- state that is not an event
    def set_model_name(self, name: str) -> None:
        with self._lock:
            old, self._model_name = self._model_name, name
        if old == name:
            return
        for gauge in (self.running, self.waiting, self.kv_usage):
            if old:
                gauge.remove(old)
        self.running.labels(name).set_function(self._running_now)
        self.waiting.labels(name).set_function(self._waiting_now)
        self.kv_usage.labels(name).set_function(self._kv_usage_now)

    def set_config(self, config_dict: dict, label: str) -> None:
        b = config_dict.get("batching", {})
        s = config_dict.get("speculative", {})
        self.config_info.info({
            "label": label,
            "kv_cache": str(config_dict.get("kv_cache", "")),
            "batching": "on" if b.get("enabled") else "off",
            "max_batch_size": str(b.get("max_batch_size", "")),
            "token_budget": str(b.get("token_budget", "")),
            "quantisation": str(config_dict.get("quantisation", "")),
            "speculative": str(s.get("mode", "")),
            "num_draft_tokens": str(s.get("num_draft_tokens", "")),
            "draft_model": str(s.get("draft_model") or ""),
            "adaptive": str(bool(s.get("adaptive"))).lower(),
        })

    def set_model(self, info: ev.ModelInfo) -> None:
        with self._lock:
            self._device = info.device
        self.model_info.info({
            "name_or_path": info.name_or_path, "architecture": info.architecture, "dtype": info.dtype,
            "device": info.device, "quantisation": info.quantisation, "num_params": str(info.num_params),
        })
        self.weights_bytes.labels(self._model_name).set(info.weights_bytes)

    # ---- the event consumer (hub thread)
    def record(self, event: ev.EngineEvent) -> None:
        name = self._model_name
        if isinstance(event, ev.RequestQueued):
            with self._lock:
                self._in_flight.add(event.request_id)
        elif isinstance(event, ev.RequestFinished):
            self._record_finished(event, name)
        elif isinstance(event, ev.StepCompleted):
            self._record_step(event.stats, name)
        elif isinstance(event, ev.ModelLoaded):
            self.set_model(event.info)
        elif isinstance(event, ev.ConfigApplied):
            self.set_config(event.config_dict, event.label)

    def _record_finished(self, event: ev.RequestFinished, name: str) -> None:
        with self._lock:
            self._in_flight.discard(event.request_id)
            if not self._in_flight:
                self._num_waiting = 0
        s = event.stats
        self.prompt_tokens.labels(name).inc(s.prompt_tokens)
        self.generation_tokens.labels(name).inc(s.completion_tokens)
        reason = "abort" if event.reason is ev.FinishReason.CANCELLED else event.reason.value
        self.request_success.labels(name, reason).inc()
        if s.prompt_tokens:
            self.prefix_queries.labels(name).inc(s.prompt_tokens)
            self.prefix_hits.labels(name).inc(s.cached_prompt_tokens)
            self.request_prompt.labels(name).observe(s.prompt_tokens)
            self.request_generation.labels(name).observe(s.completion_tokens)
            self.e2e.labels(name).observe(s.e2e_s)
        if s.ttft_s is not None:
            self.ttft.labels(name).observe(s.ttft_s)
        itl = self.itl.labels(name)
        for gap in s.itl_s:
            itl.observe(gap)

    def _record_step(self, s, name: str) -> None:
        with self._lock:
            self._num_waiting = s.num_waiting
            self._kv_bytes = s.kv_cache_bytes
        self.batch_size.labels(name).observe(s.batch_size)
        if s.batch_size > self._max_batch:
            self._max_batch = s.batch_size
            self.max_batch_seen.labels(name).set(s.batch_size)
        self.iteration_tokens.labels(name).observe(s.num_prefill_tokens + s.num_output_tokens)
        self.kv_bytes.labels(name).set(s.kv_cache_bytes)
        self.rss_bytes.set(s.rss_bytes)
        self.tokens_per_s.labels(name).set(s.tokens_per_s)
        self.weights_bytes.labels(name).set(s.weights_bytes)
        spec = s.spec
        if spec.num_drafts:
            self.spec_drafts.labels(name).inc(spec.num_drafts)
            self.spec_draft_tokens.labels(name).inc(spec.num_draft_tokens)
            self.spec_accepted.labels(name).inc(spec.num_accepted_tokens)
            for pos, count in enumerate(spec.accepted_per_position):
                self.spec_accepted_pos.labels(name, str(pos)).inc(count)

    # ---- scrape-time values
    def _running_now(self) -> float:
        with self._lock:
            return float(max(0, len(self._in_flight) - self._num_waiting))

    def _waiting_now(self) -> float:
        with self._lock:
            return float(min(self._num_waiting, len(self._in_flight)))

    def _kv_usage_now(self) -> float:
        with self._lock:
            kv, device = self._kv_bytes, self._device
            idle = not self._in_flight
        if idle:
            return 0.0
        return kv_usage_fraction(kv, available_device_bytes(device))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
