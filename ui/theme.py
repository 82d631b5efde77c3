"""Light and dark themes: a palette, the Fusion style and one QSS template with @tokens.

The system colour scheme (Qt 6.5+ style hints) is followed unless the user picks a theme.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

STYLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "styles"
TEMPLATE = "workbench.qss"


class ThemeMode(enum.Enum):
    SYSTEM = "system"
    LIGHT = "light"
    DARK = "dark"


@dataclass(frozen=True)
class Theme:
    name: str
    window: str
    surface: str
    surface_alt: str
    border: str
    text: str
    muted: str
    accent: str
    accent_hover: str
    accent_text: str
    accent_soft: str
    user_bubble: str
    danger: str
    danger_soft: str
    success: str
    warning: str
    draft_token: str  # background of tokens accepted from the draft
    target_token: str  # background of tokens the target produced itself
    code_bg: str
    selection: str

    @property
    def is_dark(self) -> bool:
        return self.name == "dark"


LIGHT = Theme(
    name="light", window="#f3f4f7", surface="#ffffff", surface_alt="#eceef2", border="#d8dce3",
    text="#1d2129", muted="#5f6877", accent="#3565d4", accent_hover="#2a55ba", accent_text="#ffffff",
    accent_soft="#e6edfc", user_bubble="#edf2fd", danger="#b3261e", danger_soft="#fbe9e7",
    success="#1e7b3a", warning="#9a5b00", draft_token="#c6ecd3", target_token="#e1e7f5",
    code_bg="#f1f3f6", selection="#cddcfa",
)

DARK = Theme(
    name="dark", window="#17191d", surface="#202329", surface_alt="#2a2e35", border="#383d46",
    text="#e4e7eb", muted="#99a2ae", accent="#6d9bff", accent_hover="#8aafff", accent_text="#0e1320",
    accent_soft="#253149", user_bubble="#243047", danger="#ff8a80", danger_soft="#3b2325",
    success="#6fcf8f", warning="#e6b054", draft_token="#1f5a39", target_token="#2c3650",
    code_bg="#15171b", selection="#33466e",
)


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None:
        value = scheme()
        if value == Qt.ColorScheme.Dark:
            return True
        if value == Qt.ColorScheme.Light:
            return False
    # unknown scheme: judge by the platform palette's window colour
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def resolve(mode: ThemeMode) -> Theme:
    if mode is ThemeMode.LIGHT:
        return LIGHT
    if mode is ThemeMode.DARK:
        return DARK
    return DARK if system_prefers_dark() else LIGHT


def stylesheet(theme: Theme, template_dir: Path = STYLES_DIR) -> str:
    text = (template_dir / TEMPLATE).read_text(encoding="utf-8")
    values = asdict(theme)
    values["icons"] = (template_dir / "icons").as_posix()
    values["variant"] = theme.name
    return re.sub(r"@([a-z_]+)", lambda m: values.get(m.group(1), m.group(0)), text)


def palette(theme: Theme) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    for r, colour in [
        (role.Window, theme.window), (role.WindowText, theme.text), (role.Base, theme.surface),
        (role.AlternateBase, theme.surface_alt), (role.Text, theme.text), (role.Button, theme.surface),
        (role.ButtonText, theme.text), (role.ToolTipBase, theme.surface), (role.ToolTipText, theme.text),
        (role.Highlight, theme.accent), (role.HighlightedText, theme.accent_text), (role.Link, theme.accent),
        (role.PlaceholderText, theme.muted), (role.Mid, theme.border), (role.Dark, theme.border),
    ]:
        p.setColor(r, QColor(colour))
    for r in (role.Text, role.WindowText, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(theme.muted))
    return p


class ThemeManager(QObject):
    """Applies a theme to the application and re-applies it when the system scheme flips."""

    theme_changed = Signal(object)  # Theme

    def __init__(self, mode: ThemeMode = ThemeMode.SYSTEM, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.theme = resolve(mode)
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._on_system_scheme_changed)

    def set_mode(self, mode: ThemeMode) -> None:
        self.mode = mode
        self.apply()

    def apply(self) -> Theme:
        self.theme = resolve(self.mode)
        app = QApplication.instance()
        if app is not None:
            if app.style().name().lower() != "fusion":
                app.setStyle("Fusion")
            app.setPalette(palette(self.theme))
            app.setStyleSheet(stylesheet(self.theme))
        self.theme_changed.emit(self.theme)
        return self.theme

    def _on_system_scheme_changed(self, _scheme) -> None:
        if self.mode is ThemeMode.SYSTEM:
            self.apply()
