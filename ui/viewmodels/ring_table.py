"""A table of float columns in one preallocated numpy array: O(1) appends, contiguous reads."""

from __future__ import annotations

import math

import numpy as np


class RingTable:
    """Columns of floats in one preallocated array; appends are O(1) amortised.

    When full, the oldest quarter is dropped by one block copy, so every column stays one
    contiguous, time-ordered view (no wrap-around to stitch when reading).
    """

    def __init__(self, columns: tuple[str, ...], capacity: int) -> None:
        if capacity < 4:
            raise ValueError("capacity must be at least 4")
        self.columns = columns
        self.capacity = capacity
        self._index = {name: i for i, name in enumerate(columns)}
        self._data = np.full((len(columns), capacity), np.nan)
        self._n = 0
        self.dropped = 0  # rows discarded to make room, in all

    def __len__(self) -> int:
        return self._n

    def append(self, row: tuple[float, ...]) -> None:
        if self._n == self.capacity:
            keep = self.capacity - self.capacity // 4
            self._data[:, :keep] = self._data[:, self.capacity - keep:]  # numpy copes with the overlap
            self._data[:, keep:] = np.nan
            self.dropped += self.capacity - keep
            self._n = keep
        self._data[:, self._n] = row
        self._n += 1

    def column(self, name: str) -> np.ndarray:
        """A read-only view (no copy) of the filled part of one column."""
        view = self._data[self._index[name], : self._n]
        view.flags.writeable = False
        return view

    def since(self, t_from: float | None) -> dict[str, np.ndarray]:
        """Copies of every column from the last row before t_from on (so lines reach the edge)."""
        start = 0
        if t_from is not None and self._n:
            start = max(int(np.searchsorted(self._data[0, : self._n], t_from, side="left")) - 1, 0)
        return {name: self._data[i, start: self._n].copy() for i, name in enumerate(self.columns)}

    def clear(self) -> None:
        self._data[:] = np.nan
        self._n = 0
        self.dropped = 0

    def to_lists(self) -> dict[str, list[float | None]]:
        return {name: [json_float(v) for v in self._data[i, : self._n]] for i, name in enumerate(self.columns)}

    def load_lists(self, data: dict[str, list]) -> None:
        self.clear()
        n = len(data.get(self.columns[0], []))
        if n > self.capacity:
            raise ValueError(f"{n} rows do not fit a table of capacity {self.capacity}")
        for i, name in enumerate(self.columns):
            values = data.get(name, [None] * n)
            self._data[i, :n] = [np.nan if v is None else float(v) for v in values]
        self._n = n


def json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)
