"""Cost arithmetic: every figure follows from the measured throughput and the entered price."""

from __future__ import annotations

import math

import pytest

from ui.formatting import MISSING
from ui.viewmodels.cost import (
    Baseline,
    CostInputs,
    CostModel,
    compare,
    cost_line,
    cost_per_million,
    device_hours_per_day,
    describe_basis,
    format_money,
)
from ui.viewmodels.throughput import MIN_COMPARE_TOKENS, Throughput


def test_cost_per_million_tokens():
    # 100 tok/s = 360,000 tokens an hour; $3.60/hour -> $0.00001 a token -> $10 per million
    assert cost_per_million(100.0, 3.60) == pytest.approx(10.0)
    assert cost_per_million(1000.0, 3.60) == pytest.approx(1.0)
    assert cost_per_million(0.0, 3.60) is None
    assert cost_per_million(float("nan"), 3.60) is None


def test_daily_projection():
    # 36,000 requests x 100 tokens = 3.6M tokens; at 100 tok/s = 36,000 s = 10 device-hours
    assert device_hours_per_day(100.0, 36_000, 100) == pytest.approx(10.0)
    line = cost_line(100.0, CostInputs(price_per_hour=2.0, requests_per_day=36_000, avg_output_tokens=100))
    assert line.device_hours_per_day == pytest.approx(10.0)
    assert line.cost_per_day == pytest.approx(20.0)
    assert line.devices_needed == 1
    big = cost_line(100.0, CostInputs(price_per_hour=2.0, requests_per_day=360_000, avg_output_tokens=100))
    assert big.device_hours_per_day == pytest.approx(100.0) and big.devices_needed == math.ceil(100 / 24)
    # cost a day is also cost per token times tokens a day
    assert big.cost_per_day == pytest.approx(big.cost_per_million * 360_000 * 100 / 1e6)


def test_comparison_with_the_baseline():
    inputs = CostInputs(price_per_hour=4.0, requests_per_day=1000, avg_output_tokens=360)
    c = compare(300.0, 100.0, inputs)
    assert c.speedup == pytest.approx(3.0)
    assert c.saving_fraction == pytest.approx(2 / 3)
    # baseline: 360,000 tokens / 100 tok/s = 1 h = $4; current: 1/3 h = $1.33
    assert c.baseline.cost_per_day == pytest.approx(4.0)
    assert c.saving_per_day == pytest.approx(4.0 - 4.0 / 3)
    slower = compare(50.0, 100.0, inputs)
    assert slower.saving_fraction == pytest.approx(-1.0)  # twice the cost
    missing = compare(None, 100.0, inputs)
    assert missing.current is None and missing.speedup is None and missing.baseline is not None


def busy(tokens_per_s: float, seconds: float = 20.0, *, t_from: float = 0.0, busy_fraction: float = 1.0):
    return Throughput(tokens_per_s, t_from, t_from + seconds, int(tokens_per_s * seconds), seconds * busy_fraction)


def test_a_captured_baseline_wins_over_the_automatic_one():
    model = CostModel(CostInputs(price_per_hour=3.6))
    auto = Baseline.from_throughput(busy(100.0), "auto", "kv on · batch 8")
    assert model.baseline(auto) is auto
    captured = Baseline.from_throughput(busy(250.0, t_from=30.0), "captured", "kv on · batch 8 · spec ngram k=4")
    assert model.capture_baseline(captured) is None
    assert model.baseline(auto) is captured
    assert model.comparison(busy(500.0), auto).speedup == pytest.approx(2.0)
    saved = model.to_dict()["captured_baseline"]
    assert saved["tokens_per_s"] == 250.0 and saved["num_tokens"] == 5000
    model.clear_baseline()
    assert model.comparison(busy(500.0), auto).speedup == pytest.approx(5.0)


def test_no_ratio_on_too_little_or_idle_data():
    model = CostModel(CostInputs(price_per_hour=3.6))
    auto = Baseline.from_throughput(busy(100.0), "auto", "kv on")
    thin = model.comparison(busy(100.0, seconds=2.0), auto)  # 200 tokens in 2 s
    assert thin.speedup is None and thin.saving_fraction is None
    assert thin.current is not None and thin.baseline is not None  # the figures still show
    assert "200 tokens" in thin.refusal and f"{MIN_COMPARE_TOKENS}" in thin.refusal
    idle = model.comparison(busy(100.0, busy_fraction=0.3), auto)
    assert idle.speedup is None and "busy 30 %" in idle.refusal
    short = Baseline.from_throughput(Throughput(500.0, 0.0, 3.0, 1500, 3.0), "captured", "kv on")
    assert "3.0 s" in model.capture_baseline(short) and model.captured is None  # refused, not kept
    assert describe_basis(busy(100.0)) == "2,000 tokens over 20.0 s (100 % busy)"


def test_inputs_reject_negative_values_and_money_formats():
    with pytest.raises(ValueError):
        CostInputs(price_per_hour=-1)
    assert format_money(None) == MISSING
    assert format_money(1234.5) == "$1,234"
    assert format_money(12.345) == "$12.35"
    assert format_money(0.01234) == "$0.0123"
