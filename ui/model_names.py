"""What a user calls a model: the bundled demo pair by the names the app gives them
("Shakespeare demo (27.8M)"), any other model by its folder name or hub id."""

from __future__ import annotations

from pathlib import Path

from ui.formatting import model_display_name


def _key(name_or_path: str) -> str:
    try:
        p = Path(name_or_path).expanduser()
        return str(p.resolve()) if p.exists() else name_or_path
    except OSError:
        return name_or_path


class ModelNames:
    """Callable: names(path_or_hub_id) -> display name. Plain data, made once by the app."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self._names = {_key(k): v for k, v in (names or {}).items()}

    def __call__(self, name_or_path: str | None) -> str:
        if name_or_path:
            known = self._names.get(_key(name_or_path))
            if known:
                return known
        return model_display_name(name_or_path)

    def known(self, name_or_path: str | None) -> bool:
        return bool(name_or_path) and _key(name_or_path) in self._names
