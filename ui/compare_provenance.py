"""Versions and machine behind a comparison, for reproducing it (reads torch: not a view model)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata

from ui.viewmodels.compare import Comparison


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_provenance(comp: Comparison | None = None) -> dict:
    """Versions and machine, for reproducing a comparison."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    devices = []
    if comp is not None:
        devices = sorted({c.model_info.device for c in comp.columns if c.model_info is not None})
    hardware = _cpu_name()
    try:
        import torch

        if torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
            hardware = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - the engine needs torch
        pass
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "app": "inference-workbench",
        "app_version": version("inference-workbench"),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "bitsandbytes": version("bitsandbytes"),
        "pyside6": version("PySide6-Essentials") or version("PySide6"),
        "platform": platform.platform(),
        "devices": devices,
        "hardware": hardware,
    }
