"""Where the bundled assets and the user's data live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
MODELS = ASSETS / "models"


def bundled_target_dir() -> Path:
    return MODELS / "target"


def bundled_draft_dir() -> Path:
    return MODELS / "draft"


def bundled_models_present() -> bool:
    return (bundled_target_dir() / "config.json").is_file()


def user_data_dir() -> Path:
    """$WORKBENCH_DATA_DIR, else the XDG data dir (~/.local/share/inference-workbench)."""
    override = os.environ.get("WORKBENCH_DATA_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "inference-workbench"
