"""Main window: layout and wiring only. Engine panel docked left, tabs in the centre, status below."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.config import EngineConfig
from ui.banner import BannerView
from ui.chat_view import ChatView
from ui.engine_panel import EnginePanel
from ui.model_names import ModelNames
from ui.remote_settings_view import RemoteSettingsView
from ui.settings_store import WorkbenchSettings
from ui.stall_probe import StallProbe
from ui.status_bar import StatusBarView
from ui.theme import ThemeManager, ThemeMode
from ui.widgets import named

APP_TITLE = "Inference Workbench"
ABOUT_TEXT = (
    "<h3>Inference Workbench</h3>"
    "<p>Chat with a language model and see what inference optimisations do: "
    "KV cache, continuous batching, quantisation and speculative decoding, switched while it runs.</p>"
    "<p>Every answer carries its tokens/s, time to first token and the exact engine configuration.</p>"
)


def app_version() -> str:
    """The installed package's version (package metadata), or a plain note when not installed."""
    from importlib import metadata

    try:
        return metadata.version("inference-workbench")
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def about_text() -> str:
    return ABOUT_TEXT.replace("<h3>Inference Workbench</h3>",
                              f"<h3>Inference Workbench</h3><p>Version {app_version()}</p>", 1)


class MainWindow(QMainWindow):
    def __init__(self, bridge, store, *, settings: WorkbenchSettings | QSettings | None = None,
                 bundled_target: Path | None = None, bundled_draft: Path | None = None,
                 model_names: dict[str, str] | None = None, parent=None) -> None:
        super().__init__(parent)
        named(self, "main_window", APP_TITLE)
        self.setWindowTitle(APP_TITLE)
        self.bridge = bridge
        self.settings = settings if isinstance(settings, WorkbenchSettings) else WorkbenchSettings(settings)
        self._closed = False

        self._views: list[QWidget] = []  # views added with add_tab
        self.themes = ThemeManager(self.settings.theme_mode(), self)
        self.themes.apply()
        self.probe = StallProbe(parent=self)
        QTimer.singleShot(0, self.probe.start)  # measure the running event loop, not start-up

        self.model_names = ModelNames(model_names)
        self.engine_panel = EnginePanel(bridge, bundled_target=bundled_target, bundled_draft=bundled_draft,
                                        recent_models=self.settings.recent_models(), model_names=self.model_names)
        self.remote_settings = RemoteSettingsView(bridge, self.engine_panel)  # shown with a remote backend
        self.engine_panel.widget().layout().insertWidget(1, self.remote_settings)
        self.engine_dock = named(QDockWidget("Engine"), "engine_dock", "Engine panel")
        self.engine_dock.setWidget(self.engine_panel)
        self.engine_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                     | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.engine_dock.setMinimumWidth(300)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.engine_dock)

        self.banner = BannerView()
        self.banner.watch(bridge, self.model_names)
        self.chat = ChatView(bridge, store, self.themes.theme, settings=self.settings, model_names=self.model_names)
        self.chat.set_colour_tokens(self.settings.colour_tokens())
        self.tabs = named(QTabWidget(), "main_tabs", "Views")
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setDrawBase(False)
        self.tabs.tabBar().setObjectName("main_tab_bar")
        self.tabs.tabBar().setAccessibleName("View tabs")
        self.add_tab(self.chat, "Chat")
        central = named(QWidget(), "central_area", "Workbench")
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.banner)
        col.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.status = StatusBarView(bridge, self.probe, model_names=self.model_names)
        self.setStatusBar(self.status)
        self._build_menus()

        self.themes.theme_changed.connect(self.chat.set_theme)
        self.chat.colour_toggle.toggled.connect(self._on_colour_tokens_toggled)
        bridge.model_loaded.connect(self._on_model_loaded)
        bridge.config_applied.connect(self._on_config_applied)
        self.engine_panel.picker.setFocusProxy(self.engine_panel.picker.combo)
        self._restore_geometry()

    # ------------------------------------------------------------------ public
    def add_tab(self, widget: QWidget, title: str) -> int:
        """Add a view tab (Compare, Dashboard, …); returns its index.

        A view with a `set_theme(theme)` method follows the theme; one with `shutdown()` is
        shut down (its threads stopped) before the engine when the window closes."""
        if hasattr(widget, "set_theme"):
            widget.set_theme(self.themes.theme)
            self.themes.theme_changed.connect(widget.set_theme)
        if not widget.objectName():
            widget.setObjectName(f"{title.lower().replace(' ', '_')}_view")
        if not widget.accessibleName():
            widget.setAccessibleName(title)
        self._views.append(widget)
        # a wide view (four compare columns) scrolls instead of forcing the window wider
        scroller = QScrollArea()
        scroller.setWidgetResizable(True)
        scroller.setFrameShape(QScrollArea.Shape.NoFrame)
        scroller.setObjectName(f"{widget.objectName()}_scroll")
        scroller.setAccessibleName(f"{title} tab")
        scroller.setWidget(widget)
        return self.tabs.addTab(scroller, title)

    def show_message(self, text: str, level: str = "error") -> None:
        self.banner.show_message(text, level)

    # ------------------------------------------------------------------ menus
    def _action(self, text: str, name: str, slot, shortcut=None, *, checkable: bool = False) -> QAction:
        act = QAction(text, self)
        act.setObjectName(name)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _menu(self, title: str, name: str):
        menu = self.menuBar().addMenu(title)
        named(menu, name, title.replace("&", ""))
        return menu

    def _build_menus(self) -> None:
        named(self.menuBar(), "menu_bar", "Menu bar")
        file_menu = self._menu("&File", "file_menu")
        self.new_chat_action = self._action("&New chat", "new_chat_action", self.chat.new_conversation,
                                            QKeySequence.StandardKey.New)
        file_menu.addAction(self.new_chat_action)
        file_menu.addAction(self._action("&Open model folder…", "open_model_action",
                                         self.engine_panel.picker.open_folder, "Ctrl+O"))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", "quit_action", self.close, QKeySequence.StandardKey.Quit))

        chat_menu = self._menu("&Chat", "chat_menu")
        self.stop_action = self._action("&Stop generating", "stop_action", self.chat.stop, Qt.Key.Key_Escape)
        self.focus_action = self._action("&Focus message input", "focus_input_action", self.chat.focus_input,
                                         "Ctrl+L")
        self.regenerate_action = self._action("&Regenerate answer", "regenerate_action", self.chat.regenerate,
                                              "Ctrl+R")
        for act in (self.focus_action, self.stop_action, self.regenerate_action):
            chat_menu.addAction(act)

        view_menu = self._menu("&View", "view_menu")
        theme_menu = view_menu.addMenu("&Theme")
        named(theme_menu, "theme_menu", "Theme")
        group = QActionGroup(self)
        self.theme_actions = {}
        for mode, text in ((ThemeMode.SYSTEM, "Follow &system"), (ThemeMode.LIGHT, "&Light"),
                           (ThemeMode.DARK, "&Dark")):
            act = self._action(text, f"theme_{mode.value}_action", lambda _c=False, m=mode: self.set_theme_mode(m),
                               checkable=True)
            act.setChecked(mode is self.themes.mode)
            group.addAction(act)
            theme_menu.addAction(act)
            self.theme_actions[mode] = act
        self.colour_action = self._action("&Colour tokens by origin", "colour_tokens_action",
                                          self.chat.set_colour_tokens, checkable=True)
        self.colour_action.setChecked(self.chat.colour_toggle.isChecked())
        view_menu.addAction(self.colour_action)
        dock_action = self.engine_dock.toggleViewAction()
        dock_action.setText("&Engine panel")
        dock_action.setObjectName("toggle_engine_panel_action")
        view_menu.addAction(dock_action)

        help_menu = self._menu("&Help", "help_menu")
        help_menu.addAction(self._action("&About Inference Workbench", "about_action", self._show_about))

    def set_theme_mode(self, mode: ThemeMode) -> None:
        self.themes.set_mode(mode)
        self.settings.set_theme_mode(mode)
        self.theme_actions[mode].setChecked(True)

    def _show_about(self) -> None:
        QMessageBox.about(self, "About Inference Workbench", about_text())

    # ------------------------------------------------------------------ wiring slots
    def _on_colour_tokens_toggled(self, on: bool) -> None:
        self.colour_action.setChecked(on)
        self.settings.set_colour_tokens(on)

    def _on_model_loaded(self, info) -> None:
        if self.bridge.is_remote:
            return  # a server's model name is not a local model to offer again
        self.engine_panel.picker.set_recent(self.settings.remember_model(info.name_or_path))

    def _on_config_applied(self, event) -> None:
        self.settings.set_engine_config(EngineConfig.from_dict(event.config_dict))

    # ------------------------------------------------------------------ geometry and shutdown
    def _restore_geometry(self) -> None:
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1440, 900)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closed:
            self._closed = True
            self.settings.save_window(self.saveGeometry(), self.saveState())
            self.settings.sync()
            self.probe.stop()
            for view in self._views:
                stop = getattr(view, "shutdown", None)
                if callable(stop):
                    stop()
            self.bridge.shutdown()
        super().closeEvent(event)
