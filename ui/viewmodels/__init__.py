"""Qt-free view models: what the views show, as plain Python and numpy.

Nothing here imports PySide6, pyqtgraph or torch (an import-linter contract in pyproject
enforces it), so every figure a view displays is testable without a widget, and the views
are thin: they take a model, read it on their timer and format nothing themselves.
"""
