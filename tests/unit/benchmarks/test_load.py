"""`mltagger load-test` without a service: locust's CSV read back into the table's numbers, the
worker ratios, and the user mistakes that must be one line and exit 2 before anything starts."""

from __future__ import annotations

import argparse
import socket

import pytest

from mltagger.benchmarks.load import parse_batching, parse_scenarios, parse_workers
from mltagger.benchmarks.load_batching import comparisons, format_comparisons
from mltagger.benchmarks.load_stats import format_table, read_stats, worker_ratios
from mltagger.cli import main
from mltagger.core.errors import EXIT_USAGE

# The columns locust 2.47 writes to <prefix>_stats.csv (header as it writes it).
COLUMNS = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def write_stats(path, requests: int, failures: int, rps: float, p50="51", p95="78", p99="83"):
    row = (
        f"{requests},{failures},51,53.1,35.2,91.0,3316.0,{rps},0.0,"
        f"{p50},57,62,62,68,{p95},83,{p99},91,91,91"
    )
    path.write_text(f"{COLUMNS}\nPOST,POST /predict [8],{row}\n,Aggregated,{row}\n")
    return path


def test_items_per_second_count_only_answered_items_of_each_batch(tmp_path):
    stats = read_stats(write_stats(tmp_path / "b_stats.csv", 100, 10, 40.0), batch=8)
    assert stats["requests"] == 100 and stats["failures"] == 10 and stats["batch"] == 8
    assert stats["requests_per_s"] == 40.0
    assert stats["items_per_s"] == pytest.approx(40.0 * 0.9 * 8)  # failed requests tag nothing
    assert (stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]) == (51.0, 78.0, 83.0)


def test_a_run_without_requests_has_no_percentiles_and_no_throughput(tmp_path):
    path = write_stats(tmp_path / "s_stats.csv", 0, 0, 0.0, p50="N/A", p95="N/A", p99="N/A")
    stats = read_stats(path, batch=1)
    assert stats["requests"] == 0 and stats["items_per_s"] == 0.0
    assert stats["p50_ms"] is None and stats["p99_ms"] is None


def row(workers, scenario, items_per_s):
    return {
        "workers": workers, "scenario": scenario, "users": 4, "batch": 1, "requests": 10,
        "failures": 0, "requests_per_s": items_per_s, "items_per_s": items_per_s,
        "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": None,
    }  # fmt: skip


def test_worker_ratios_are_against_one_worker_of_the_same_run():
    rows = [row(1, "single", 100.0), row(2, "single", 150.0), row(4, "single", 180.0)]
    rows += [row(1, "store", 50.0), row(2, "store", 40.0)]
    ratios = worker_ratios(rows)
    assert ratios == {
        "single (4 users)": {"1": 1.0, "2": 1.5, "4": 1.8},
        "store (4 users)": {"1": 1.0, "2": 0.8},
    }
    table = format_table(rows, ratios)
    assert "single (4 users)               1: 1.00x  2: 1.50x  4: 1.80x" in table
    assert "n/a" in table  # a percentile locust could not give
    # without a 1-worker row there is nothing to compare with, and no ratio line
    assert worker_ratios([row(2, "single", 150.0)]) == {}
    assert "relative" not in format_table([row(1, "single", 1.0)], worker_ratios([]))
    # batching on and off are separate series, each against its own 1 worker
    on = [{**r, "batching": "on"} for r in rows[:2]]
    off = [{**r, "batching": "off", "items_per_s": r["items_per_s"] / 2} for r in rows[:2]]
    assert worker_ratios(on + off) == {
        "single (4 users, batching on)": {"1": 1.0, "2": 1.5},
        "single (4 users, batching off)": {"1": 1.0, "2": 1.5},
    }


def test_batching_on_over_off_and_over_the_raw_model():
    rows = [
        {**row(1, "single", 300.0), "users": 16, "batching": "on"},
        {**row(1, "single", 150.0), "users": 16, "batching": "off", "p50_ms": 4.0},
        {**row(1, "exact", 400.0), "users": 1, "batching": "on", "p50_ms": 2.6},
        {**row(1, "exact", 410.0), "users": 1, "batching": "off", "p50_ms": 2.4},
        {**row(1, "single", 90.0), "users": 4, "batching": "on"},  # no off row to compare
    ]
    comps = comparisons(rows, {16: 600.0, 4: 100.0})
    by = {(c["scenario"], c["users"]): c for c in comps}
    assert by[("single", 16)]["on_over_off"] == 2.0
    assert by[("single", 16)]["p50_on_minus_off_ms"] == 1.0
    assert by[("single", 16)]["on_over_raw"] == 0.5
    assert by[("exact", 1)]["p50_on_minus_off_ms"] == pytest.approx(0.2)
    assert by[("single", 4)] == {"workers": 1, "scenario": "single", "users": 4, "on_over_raw": 0.9}
    text = format_comparisons(comps, {16: 600.0, 4: 100.0})
    assert "batch 4: 100, batch 16: 600" in text and "90% of raw batch-4" in text


def test_batching_modes():
    assert parse_batching("on,off") == ["on", "off"] and parse_batching("off") == ["off"]
    for bad in ("yes", "on,on", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_batching(bad)


def test_worker_and_scenario_lists():
    assert parse_workers("1,2,4") == [1, 2, 4]
    assert parse_scenarios("single, store") == ["single", "store"]
    for bad in ("0", "1,1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_workers(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="scenarios from"):
        parse_scenarios("single,nope")


def load_test(argv: list[str], capsys) -> str:
    """Run `mltagger load-test ARGV`, expect exit 2, return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(["load-test", *argv])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_user_mistakes_are_one_line_and_exit_2_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "run"
    err = load_test(["--url", "http://example.com:80", "--out", str(out)], capsys)
    assert err.strip() == "error: the load test only targets 127.0.0.1"
    err = load_test(["--url", "http://127.0.0.1:9", "--workers", "1,2"], capsys)
    assert "apply to a started service" in err
    err = load_test(["--model", str(tmp_path / "nowhere"), "--out", str(out)], capsys)
    assert "no model at" in err and "make export" in err and len(err.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = load_test(["--port", str(port), "--out", str(out)], capsys)
    assert f"port {port} on 127.0.0.1 is busy" in err
    assert "--workers" in load_test(["--workers", "0"], capsys)
    assert not out.exists()  # nothing was started or written
