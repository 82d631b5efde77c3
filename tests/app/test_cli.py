"""The headless CLI: help, generate, bench JSON shape."""

from __future__ import annotations

import json

import pytest

from app.cli import build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("gui", "generate", "bench", "loadtest", "train-demo"):
        assert cmd in out


def test_generate_streams_and_prints_metrics(tiny_llama_dir, capsys):
    rc = main(["generate", "--model", str(tiny_llama_dir), "--prompt", "the quick", "--max-new-tokens", "12",
               "--temperature", "0", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.err.strip().splitlines()[-1])
    assert metrics["completion_tokens"] <= 12 and metrics["ttft_s"] > 0
    assert len(captured.out.strip()) > 0


def test_generate_with_kv_off_matches_kv_on(tiny_llama_dir, capsys):
    outs = []
    for extra in ([], ["--no-kv-cache"]):
        main(["generate", "--model", str(tiny_llama_dir), "--prompt", "a horse", "--max-new-tokens", "10",
              "--temperature", "0", *extra])
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_generate_bad_model_fails_cleanly(tmp_path, capsys):
    rc = main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x"])
    assert rc == 1
    assert "No such directory" in capsys.readouterr().err


def test_bench_writes_json_of_the_documented_shape(tiny_llama_dir, tmp_path):
    out = tmp_path / "bench.json"
    csv_out = tmp_path / "bench.csv"
    rc = main(["bench", "--model", str(tiny_llama_dir), "--suite", "batching", "--quick", "--json", str(out),
               "--csv", str(csv_out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert "machine" in report and "torch" in report["machine"]
    runs = report["suites"]["batching"]["runs"]
    assert [r["name"] for r in runs] == ["sequential", "continuous-8", "hf-static-8"]
    for key in ("tokens_per_s", "ttft_s", "itl_p50_s", "itl_p95_s", "peak_rss_bytes", "weights_bytes",
                "kv_cache_bytes", "completion_tokens", "outputs_match_reference", "config"):
        assert key in runs[0]
    assert runs[1]["outputs_match_reference"] is True
    assert runs[0]["completion_tokens"] == runs[1]["completion_tokens"] == 2 * sum([32, 96, 48, 128, 64, 112, 40, 80])
    assert len(csv_out.read_text().strip().splitlines()) == 4


def test_parser_defaults():
    args = build_parser().parse_args(["bench"])
    assert args.suite == "all" and not args.quick


def test_bench_repeats_are_interleaved_medians_with_peers_in_their_own_process(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", str(tiny_llama_dir), "--suite", "kv", "--quick", "--repeats", "2",
               "--json", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    order = [ln.split("kv: ", 1)[1] for ln in err.splitlines() if "kv: " in ln and "repeat" in ln]
    assert order == [f"{name} (repeat {r}/2)" for r in (1, 2) for name in ("kv-off", "kv-on", "kv-on-stepwise", "hf-generate")]
    report = json.loads(out.read_text())
    assert report["repeats"] == 2 and report["machine"]["read_bandwidth_bytes_per_s"] > 1e8
    runs = {r["name"]: r for r in report["suites"]["kv"]["runs"]}
    for r in runs.values():
        assert r["repeats"] == 2
        assert r["tokens_per_s_min"] <= r["tokens_per_s"] <= r["tokens_per_s_max"]
    assert runs["hf-generate"]["process"] == "own"
    assert runs["kv-on"]["outputs_match_reference"] is True and runs["kv-off"]["outputs_match_reference"] is True
    assert 0 < runs["kv-on"]["roofline_pct"] < 100
    # bytes per decode step: the time per token between emissions (bursts bring several), not the ITL
    assert runs["kv-on"]["weight_read_bytes_per_s"] == pytest.approx(
        runs["kv-on"]["weights_bytes"] / runs["kv-on"]["token_gap_p50_s"])
    assert runs["kv-on"]["token_gap_p50_s"] < runs["kv-on"]["itl_p50_s"]
    # the roofline divides by the better of two probes bracketing the suite
    kv = report["suites"]["kv"]
    assert len(kv["read_bandwidth_probes"]) == 2 and kv["read_bandwidth_bytes_per_s"] == max(kv["read_bandwidth_probes"])
    assert runs["kv-on"]["roofline_pct"] == pytest.approx(
        100 * runs["kv-on"]["weight_read_bytes_per_s"] / kv["read_bandwidth_bytes_per_s"])
    # every repeat's speed is kept, and the headline is their median
    for r in runs.values():
        assert len(r["tokens_per_s_runs"]) == 2
        assert min(r["tokens_per_s_runs"]) <= r["tokens_per_s"] <= max(r["tokens_per_s_runs"])
