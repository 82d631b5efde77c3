"""Fixtures for the desktop app: a real engine on a tiny model behind a real main window."""

from __future__ import annotations

import gc

import pytest
from PySide6.QtCore import QCoreApplication, QEvent

from tests.helpers.windows import WindowFactory
from ui.qt_compat import apply_workarounds

apply_workarounds()  # PySide6 6.12 on Python 3.11 leaks None references: see ui/qt_compat.py


@pytest.fixture(autouse=True)
def _collect_qt_garbage_on_the_gui_thread(qapp):
    """Collect reference cycles here, on the GUI thread, before and after each test.

    The engine calls gc.collect() on its own thread when it installs a model; Qt objects a
    previous test left as cyclic garbage (pytest releases fixture values only after teardown)
    would then be finalised off the GUI thread ("Timers cannot be started from another thread",
    or a crash). The app itself runs ui.gc_guard for the same reason.
    """
    _collect()
    yield
    _collect()


def _collect() -> None:
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Conversations and settings go to a per-test dir (WORKBENCH_DATA_DIR)."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(path))
    return path


@pytest.fixture
def make_window(qtbot, data_dir, tiny_llama_dir):
    """make_window(model=None) -> a shown MainWindow whose engine has loaded `model`
    (default: the tiny Llama). Windows are closed, engines joined and stores closed after the test."""
    factory = WindowFactory(qtbot, data_dir, str(tiny_llama_dir))
    yield factory
    factory.close_all()


@pytest.fixture
def window(make_window):
    return make_window()
