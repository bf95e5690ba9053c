"""The benchmark harness keeps working: `python -m bench --quick` on a small part writes results of the documented
shape, and the table/chart helpers accept what the parts produce. Nothing here asserts how fast anything is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import Measurement, PartResult, Report

REPO = Path(__file__).resolve().parents[2]
ROW_KEYS = {"name", "unit", "n", "median", "p90", "notes", "samples", "extra"}


def test_quick_rtf_part_writes_results_json_of_the_documented_shape(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "rtf", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["schema"] == 1 and results["quick"] is True
    assert {"cpus", "platform", "python", "loadavg_at_start", "loadavg_at_end"} <= set(results["machine"])
    [part] = results["parts"]
    assert part["part"] == "rtf" and part["error"] is None
    names = {row["name"] for row in part["rows"]}
    assert {f"{kind}_rtf_{s}s" for kind in ("stt", "tts") for s in (1, 3, 8)} == names
    for row in part["rows"]:
        assert set(row) == ROW_KEYS
        assert row["unit"] == "x" and row["n"] >= 1 and len(row["samples"]) == row["n"]
        assert 0 < row["median"] <= row["p90"]
    assert "stt_rtf_8s" in proc.stdout  # the table was printed


def test_measurement_ignores_missing_values_and_uses_nearest_rank_p90() -> None:
    m = Measurement.of("x", "ms", [None, *range(1, 11)], "notes", chart=True)
    assert (m.n, m.median, m.p90) == (10, 5.5, 9.0)
    empty = Measurement.of("y", "ms", [None])
    assert (empty.n, empty.median, empty.p90) == (0, None, None)


def test_report_prints_every_row_and_charts_only_marked_latency_rows(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = Report(quick=True)
    report.add(
        PartResult(
            "a",
            1.0,
            [
                Measurement.of("stage_one", "ms", [100, 120, 140], chart=True),
                Measurement.of("ratio", "ratio", [1.5]),
            ],
        )
    )
    report.add(PartResult("b", 0.0, [], "needs the network namespace"))
    out = io.StringIO()
    report.print_table(out)
    assert "stage_one" in out.getvalue() and "ratio" in out.getvalue()
    assert "FAILED: needs the network namespace" in out.getvalue()
    chart = report.draw_chart(tmp_path / "latency.png")
    assert chart is not None and chart.stat().st_size > 0
    assert json.loads(json.dumps(report.to_json()))["parts"][1]["error"] == "needs the network namespace"


def test_unknown_part_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nonsense"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "unknown part" in proc.stderr
