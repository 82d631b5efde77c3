"""Typed access to the persisted window settings (QSettings, organisation "InferenceWorkbench")."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine.config import EngineConfig, SamplingParams
from ui.theme import ThemeMode

ORGANISATION = "InferenceWorkbench"
APPLICATION = "Workbench"
MAX_RECENT = 8


def default_settings(data_dir: Path | None = None) -> QSettings:
    """An INI file in `data_dir` when given (tests, portable installs), else the platform store."""
    if data_dir is not None:
        return QSettings(str(Path(data_dir) / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(ORGANISATION, APPLICATION)


class WorkbenchSettings:
    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings if settings is not None else default_settings()

    # ---- window
    def geometry(self) -> QByteArray | None:
        value = self.qsettings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        value = self.qsettings.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    # ---- theme
    def theme_mode(self) -> ThemeMode:
        try:
            return ThemeMode(str(self.qsettings.value("view/theme", ThemeMode.SYSTEM.value)))
        except ValueError:
            return ThemeMode.SYSTEM

    def set_theme_mode(self, mode: ThemeMode) -> None:
        self.qsettings.setValue("view/theme", mode.value)

    def colour_tokens(self) -> bool:
        return str(self.qsettings.value("view/colour_tokens", "false")).lower() == "true"

    def set_colour_tokens(self, on: bool) -> None:
        self.qsettings.setValue("view/colour_tokens", "true" if on else "false")

    # ---- models
    def last_model(self) -> str | None:
        value = self.qsettings.value("model/last")
        return str(value) if value else None

    def recent_models(self) -> list[str]:
        raw = self.qsettings.value("model/recent", "[]")
        try:
            items = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        except ValueError:
            items = []
        return [str(x) for x in items if x][:MAX_RECENT]

    def remember_model(self, name_or_path: str) -> list[str]:
        recent = [name_or_path] + [m for m in self.recent_models() if m != name_or_path]
        recent = recent[:MAX_RECENT]
        self.qsettings.setValue("model/last", name_or_path)
        self.qsettings.setValue("model/recent", json.dumps(recent))
        return recent

    # ---- engine
    def engine_config(self) -> EngineConfig:
        raw = self.qsettings.value("engine/config")
        if not raw:
            return EngineConfig()
        try:
            return EngineConfig.from_dict(json.loads(str(raw)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return EngineConfig()

    def set_engine_config(self, config: EngineConfig) -> None:
        self.qsettings.setValue("engine/config", json.dumps(config.to_dict()))

    # ---- generation settings (the chat's sampling fields), with the model they were set for
    def sampling(self) -> tuple[str, SamplingParams] | None:
        raw = self.qsettings.value("generation/sampling")
        if not raw:
            return None
        try:
            data = json.loads(str(raw))
            params = SamplingParams(
                temperature=float(data["temperature"]), top_k=int(data["top_k"]), top_p=float(data["top_p"]),
                seed=None if data.get("seed") is None else int(data["seed"]),
                max_new_tokens=int(data["max_new_tokens"]),
                stop=tuple(str(x) for x in data.get("stop", [])))
            return str(data["model"]), params
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # a damaged or older entry: the model's defaults apply

    def set_sampling(self, model: str, params: SamplingParams) -> None:
        self.qsettings.setValue("generation/sampling", json.dumps({
            "model": model, "temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
            "seed": params.seed, "max_new_tokens": params.max_new_tokens, "stop": list(params.stop)}))

    def sync(self) -> None:
        self.qsettings.sync()
