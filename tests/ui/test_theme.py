"""ui/theme.py: both themes fill the whole template; the system scheme is followed unless overridden."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ui import theme
from ui.theme import DARK, LIGHT, ThemeManager, ThemeMode


@pytest.mark.parametrize("t", [LIGHT, DARK], ids=["light", "dark"])
def test_stylesheet_has_every_token_filled_and_icons_exist(t):
    qss = theme.stylesheet(t)
    assert not re.findall(r"@[a-z_]+", qss), "unfilled tokens"
    icons = re.findall(r"url\(([^)]+)\)", qss)
    assert icons
    for icon in icons:
        assert Path(icon).is_file(), icon
        assert t.name in Path(icon).name


def test_manager_follows_the_system_only_in_system_mode(qapp, monkeypatch):
    dark = {"value": False}
    monkeypatch.setattr(theme, "system_prefers_dark", lambda: dark["value"])
    seen = []
    manager = ThemeManager(ThemeMode.SYSTEM)
    manager.theme_changed.connect(seen.append)
    try:
        assert manager.apply() is LIGHT
        dark["value"] = True
        manager._on_system_scheme_changed(None)
        assert manager.theme is DARK and seen[-1] is DARK
        assert qapp.palette().color(qapp.palette().ColorRole.Window).name() == DARK.window

        manager.set_mode(ThemeMode.LIGHT)  # the manual override wins over the system
        manager._on_system_scheme_changed(None)
        assert manager.theme is LIGHT
    finally:
        manager.set_mode(ThemeMode.LIGHT)
        manager.deleteLater()
