"""The engine's model lifecycle, on the engine thread: load a model, switch its quantisation
level, (re)build the speculative decoder. Mixed into EngineCore, which owns the state."""

from __future__ import annotations

import torch

from engine import events as ev
from engine.config import EngineConfig, ModelSpec, SpeculativeMode
from engine.events import EngineState, FinishReason
from engine.models import LoadedModel, ModelLoadError, load_model, resolve_dtype
from engine.quant import load_plan
from engine.runner import ModelRunner
from engine.spec.decoder import configure_spec


class ModelHost:
    """Model loading for EngineCore (see engine.core for the attributes it relies on)."""

    def load(self, spec: ModelSpec) -> None:
        """Load a model; on failure keep the previous one and say why."""
        self.emit(ev.StateChanged(EngineState.LOADING, spec.name_or_path))
        try:
            loaded = load_model(spec, self.config.quantisation, self._progress(ev.LoadTarget.MODEL))
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the old model
            message = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            self.emit(ev.EngineErrorEvent(message=message, where=ev.ErrorSite.LOAD))
            self.emit(ev.StateChanged(EngineState.IDLE, "load failed"))
            return
        # A different model means different token ids: requests in flight cannot continue.
        self.cancel_all("model changed")
        self._install(loaded)
        self.emit(ev.LoadProgress(what=ev.LoadTarget.MODEL, fraction=1.0, message="loaded"))
        self.emit(ev.ModelLoaded(info=loaded.info))
        self._configure_spec_after_load()

    def _progress(self, what: ev.LoadTarget):
        def report(fraction: float, message: str) -> None:
            self.emit(ev.LoadProgress(what=what, fraction=fraction, message=message))

        return report

    def _configure_spec_after_load(self) -> None:
        # a new target needs its drafter checked again (tokenizer, vocabulary, device)
        self.spec = None
        if self.config.speculative.mode is not SpeculativeMode.OFF:
            try:
                self._apply_speculative(self.config)
            except Exception as exc:  # noqa: BLE001 - a bad draft must not take the target down
                self.config = self.config.with_(speculative=EngineConfig().speculative)
                self.emit(ev.EngineErrorEvent(message=f"speculative decoding turned off: {exc}",
                                              where=ev.ErrorSite.CONFIG))
        self.emit(ev.StateChanged(EngineState.IDLE, "model loaded"))

    def _apply_speculative(self, new: EngineConfig) -> None:
        self.spec = configure_spec(self.spec, self.loaded, new.speculative, self._progress(ev.LoadTarget.DRAFT))

    def _install(self, loaded: LoadedModel) -> None:
        """New weights: everything computed with the old ones is stale (requests re-prefill)."""
        old = self.loaded
        self.loaded = loaded
        self.runner = ModelRunner(loaded.model, loaded.device, loaded.tokenizer.pad_token_id,
                                  interrupt=self.stop_event)
        self._drop_cache()
        self.prefix_cache.clear()
        del old
        free_memory(self.collect_garbage)

    def _requantise(self, new: EngineConfig) -> None:
        """Load the weights at the new level; requests in flight pause and re-prefill after."""
        spec = self.loaded.spec
        # refuse before touching anything when the level cannot run here
        load_plan(new.quantisation, model_config=self.loaded.model.config, device=self.loaded.device,
                  base_dtype=resolve_dtype(spec.dtype, self.loaded.device, self.loaded.model.config))
        self.emit(ev.StateChanged(EngineState.LOADING, f"quantising to {new.quantisation.value}"))
        progress = self._progress(ev.LoadTarget.QUANTISE)
        if room_for_second_copy(self.loaded.info.weights_bytes, self.loaded.device):
            # keep serving on what is loaded until the new weights are in: a failed load changes nothing
            try:
                loaded = load_model(spec, new.quantisation, progress)
            finally:
                self._emit_busy_state()
        else:
            loaded = self._reload_in_place(spec, new, progress)
        self._install(loaded)
        self.emit(ev.ModelLoaded(info=loaded.info))
        if loaded.skipped_modules:
            self.emit(ev.EngineErrorEvent(
                message=f"{new.quantisation.value}: kept {len(loaded.skipped_modules)} layers in full precision "
                        f"(input size not a multiple of 64): {', '.join(loaded.skipped_modules[:4])}"
                        + ("…" if len(loaded.skipped_modules) > 4 else ""),
                where=ev.ErrorSite.CONFIG))
        self._emit_busy_state()

    def _reload_in_place(self, spec: ModelSpec, new: EngineConfig, progress) -> LoadedModel:
        """Too little memory for two copies: free the old weights first. If neither the new nor
        the old level loads again (the directory moved), end the requests in flight clearly."""
        self._drop_cache()
        self.runner = None
        old_level = self.loaded.quantisation
        # drop our references only: weights shared with other engines (engine.pool) stay alive there
        self.loaded = None
        free_memory(self.collect_garbage)
        try:
            return load_model(spec, new.quantisation, progress)
        except Exception as first:
            try:
                self._install(load_model(spec, old_level, progress))
            except Exception as second:  # noqa: BLE001 - nothing to serve on: say so to everyone waiting
                self.spec = None
                for req in list(self._reqs.values()):
                    self._finish(req, FinishReason.ERROR,
                                 error=f"the model could not be reloaded after a failed quantisation: {second}")
                self.emit(ev.StateChanged(EngineState.IDLE, "no model loaded"))
                raise ModelLoadError(f"quantising failed ({first}) and the previous weights could not be "
                                     f"reloaded ({second}); load a model") from first
            self._emit_busy_state()
            raise

    def _emit_busy_state(self) -> None:
        self.emit(ev.StateChanged(EngineState.RUNNING if self.scheduler.has_work() else EngineState.IDLE))


def room_for_second_copy(weights_bytes: int, device: torch.device) -> bool:
    """Whether a second copy of the weights fits beside the first (with a margin)."""
    try:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            return free > 2 * weights_bytes + (512 << 20)
        import psutil

        return psutil.virtual_memory().available > 2 * weights_bytes + (512 << 20)
    except Exception:  # noqa: BLE001 - unknown: take the frugal path
        return False


def free_memory(collect_garbage: bool = True) -> None:
    """Return freed weight memory to the system. Reference counting frees tensors; a GC pass
    also breaks module reference cycles, but a GUI host may forbid it off its own thread
    (collecting Qt wrappers on a foreign thread breaks Qt), so it can be turned off."""
    if collect_garbage:
        import gc

        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
