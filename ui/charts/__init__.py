"""pyqtgraph charts drawn from a DashboardModel snapshot.

Each chart is a frame: a header (title, colour legend, read-out) above a plot. Time charts
share one X axis (seconds since the dashboard started; the view links them), carry one
labelled vertical line per configuration change, and a crosshair that follows the mouse on
any of them; the read-out shows the exact values under it (the latest values otherwise).
Curves get whole arrays through setData on the view's timer, with clip-to-view and peak
downsampling on, so drawing cost follows the pixels, not the number of samples.
"""

from __future__ import annotations

from ui.charts.bar_charts import BarChart, PositionChart, SpeedupChart
from ui.charts.base import MIB, ChartFrame, ChartTheme, nice_ceiling
from ui.charts.time_axis import TimeChart
from ui.charts.time_charts import (
    AcceptanceChart,
    BatchChart,
    LatencyChart,
    MemoryChart,
    ThroughputChart,
    VerifyChart,
)

__all__ = ["MIB", "AcceptanceChart", "BarChart", "BatchChart", "ChartFrame", "ChartTheme", "LatencyChart",
           "MemoryChart", "PositionChart", "SpeedupChart", "ThroughputChart", "TimeChart", "VerifyChart",
           "bar_charts", "nice_ceiling", "time_charts"]


def time_charts(theme: ChartTheme) -> list[TimeChart]:
    return [ThroughputChart(theme), LatencyChart(theme), MemoryChart(theme), BatchChart(theme),
            AcceptanceChart(theme), VerifyChart(theme)]


def bar_charts(theme: ChartTheme) -> list[BarChart]:
    return [PositionChart(theme), SpeedupChart(theme)]
