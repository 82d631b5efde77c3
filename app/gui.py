"""`workbench gui`: compose the engine, the bridge, the conversation store and the main window."""

from __future__ import annotations

import os
import sys
from pathlib import Path

NO_DISPLAY_MESSAGE = (
    "No display found: run under xvfb-run, set QT_QPA_PLATFORM=offscreen, "
    "or use `workbench bench` / `workbench generate` for headless work."
)


def display_available(environ=None) -> bool:
    """False on a Linux/BSD machine with no X11/Wayland display and no explicit Qt platform."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return True  # macOS and Windows always have a window system
    return any(env.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def choose_model(model: str | None, last_model: str | None) -> str | None:
    """The model to load at start: the one asked for, else the last one used, else the bundled demo."""
    from app import paths

    if model:
        return model
    if last_model and (Path(last_model).expanduser().is_dir() or not _looks_like_path(last_model)):
        return last_model
    if paths.bundled_models_present():
        return str(paths.bundled_target_dir())
    return None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


BUNDLED_NAMES = {"target": "Shakespeare demo", "draft": "Shakespeare demo draft"}


def bundled_model_names() -> dict[str, str]:
    """Names a user understands for the bundled pair, with their size: 'Shakespeare demo (27.8M)'."""
    from app import paths

    names = {}
    for kind, directory in (("target", paths.bundled_target_dir()), ("draft", paths.bundled_draft_dir())):
        weights = directory / "model.safetensors"
        if not weights.is_file():
            continue
        try:
            params = _count_params(weights)
        except (OSError, ValueError) as exc:
            print(f"workbench: cannot read {weights}: {exc}", file=sys.stderr)
            params = 0
        size = f" ({params / 1e6:.1f}M)" if params else ""
        names[str(directory)] = f"{BUNDLED_NAMES[kind]}{size}"
    return names


def _count_params(weights: Path) -> int:
    """Parameters in a .safetensors file, from its JSON header only (no tensor is read)."""
    import json
    import struct

    with open(weights, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > 100_000_000:
            raise ValueError("implausible safetensors header")
        header = json.loads(fh.read(size))
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def limit_torch_threads() -> int:
    """Leave one core to the GUI thread: with every core in torch's pool, a redraw preempts an
    OpenMP worker and the whole parallel region waits for it (steps 10-100x slower)."""
    import torch

    cores = os.cpu_count() or 1
    threads = max(1, min(torch.get_num_threads(), cores - 1))
    torch.set_num_threads(threads)
    return threads


CORRUPT_DIALOG_NAME = "unreadable_database_dialog"


def ask_move_aside(error) -> bool:
    """Ask whether to move an unreadable conversations database aside (a real dialog)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, "Conversations cannot be read",
                      "The saved conversations cannot be read, so the workbench cannot show them.")
    box.setObjectName(CORRUPT_DIALOG_NAME)
    box.setAccessibleName("Conversations cannot be read")
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setInformativeText(f"File: {error.path}\nProblem: {error.reason}\n\n"
                           "Move it aside (renamed, nothing is deleted) and start with no conversations?")
    move = box.addButton("Move aside and start fresh", QMessageBox.ButtonRole.AcceptRole)
    move.setObjectName("move_database_aside_button")
    quit_button = box.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
    quit_button.setObjectName("quit_button")
    box.setDefaultButton(move)
    box.exec()
    return box.clickedButton() is move


def open_store(path=None, ask=ask_move_aside):
    """The conversation store, or None when it cannot be read and the user chose to quit.
    An unreadable database is moved aside only after the user agreed (the dialog names it)."""
    from app.storage import ConversationStore, DatabaseUnreadable, move_aside

    try:
        store = ConversationStore(path)
    except DatabaseUnreadable as exc:
        if not ask(exc):
            return None
        moved = move_aside(exc.path)
        print(f"workbench: moved the unreadable conversations database to {moved}", file=sys.stderr)
        store = ConversationStore(exc.path)
    store.mark_interrupted()
    return store


def add_views(window, bridge, model: str | None, draft: str | None) -> None:
    """The Compare, Dashboard, Tune, Timeline and Memory tabs (each owns its own threads; the window
    shuts them down)."""
    from ui.compare_bridge import CompareBridge
    from ui.compare_view import CompareView
    from ui.dashboard_view import DashboardView

    compare = CompareView(CompareBridge(window), model, draft_model=draft)
    dashboard = DashboardView(bridge)
    compare.bridge.comparison_finished.connect(dashboard.cost_view.offer_comparison)  # a cost baseline
    window.add_tab(compare, "Compare")
    window.add_tab(dashboard, "Dashboard")
    add_inside_views(window, bridge, compare, draft)


def add_inside_views(window, bridge, compare, draft: str | None) -> None:
    """The Tune, Timeline and Memory tabs; Tune's "Send to Compare" opens its picks as Compare columns."""
    from ui.memory_view import MemoryView
    from ui.timeline_view import TimelineView
    from ui.tune_view import TuneView

    from app import paths

    tune = TuneView(bridge, draft_model=draft, save_path=paths.user_data_dir() / "tune-last.json")
    window.add_tab(tune, "Tune")
    window.add_tab(TimelineView(bridge), "Timeline")
    window.add_tab(MemoryView(bridge), "Memory")

    def to_compare(columns) -> None:
        compare.set_columns(columns)
        window.tabs.setCurrentIndex(window.tabs.indexOf(compare.parentWidget().parentWidget()))

    tune.compare_requested.connect(to_compare)


def add_serve_toggle(window, engine, hub, bridge):
    """The status bar's "Serve on port …" toggle; none when the 'serve' extra is not installed."""
    try:
        from app.serve.gui_control import install_serve_toggle
    except ImportError:
        return None
    return install_serve_toggle(window, engine, hub, bridge)


def run_gui(model: str | None = None, draft: str | None = None) -> int:
    if not display_available():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication

    from app import paths
    from engine.config import SpeculativeConfig, SpeculativeMode
    from engine.engine import Engine
    from engine.event_hub import EventHub
    from ui.bridge import EngineBridge
    from ui.gc_guard import GuiThreadGarbageCollector
    from ui.main_window import MainWindow
    from ui.qt_compat import apply_workarounds
    from ui.settings_store import (
        APPLICATION,
        ORGANISATION,
        WorkbenchSettings,
        default_settings,
    )

    apply_workarounds()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("Inference Workbench")
    collector = GuiThreadGarbageCollector(app)
    collector.start()

    store = open_store()
    if store is None:
        collector.stop()
        return 1
    data_override = os.environ.get("WORKBENCH_DATA_DIR")
    settings = WorkbenchSettings(default_settings(paths.user_data_dir() if data_override else None))
    saved = settings.engine_config()
    # speculative settings are applied through the panel once the engine runs, so a refusal shows there
    limit_torch_threads()
    start_model = choose_model(model, settings.last_model())
    engine = Engine(start_model,
                    config=saved.with_(speculative=SpeculativeConfig(mode=SpeculativeMode.OFF)),
                    collect_garbage=False)  # the GUI thread collects (ui/gc_guard.py)
    # one reader of the engine's events, fanned out to the bridge and (when on) the HTTP server
    hub = EventHub(engine.events).start()
    bridge = EngineBridge(engine, events=hub.open_queue())
    draft_dir = paths.bundled_draft_dir()
    window = MainWindow(bridge, store, settings=settings, bundled_target=paths.bundled_target_dir(),
                        bundled_draft=draft_dir if draft_dir.is_dir() else None,
                        model_names=bundled_model_names())
    add_views(window, bridge, start_model, draft or (str(draft_dir) if draft_dir.is_dir() else None))
    add_serve_toggle(window, engine, hub, bridge)
    bridge.start()
    if draft:
        window.engine_panel.use_draft(draft)
    elif saved.speculative.mode is not SpeculativeMode.OFF:
        window.engine_panel.apply_config(saved)
    window.show()
    try:
        return app.exec()
    finally:
        bridge.shutdown()
        hub.stop()
        store.close()
        collector.stop()
