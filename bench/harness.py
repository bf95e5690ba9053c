"""Measurements, the printed table, the JSON file and the latency chart — shared by every benchmark part.

A `Measurement` is one result row: name, unit, how many samples, median and p90 (nearest rank, the same
percentile `voice-mcp stats` uses), free-text notes, the raw samples and any extra numbers. A part returns a
list of them; `Report` collects the rows of every part, prints them, writes them as JSON and draws the chart.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mcp_bridge.stats import StageSummary, draw_chart, percentile

SCHEMA_VERSION = 1


@dataclass
class Measurement:
    name: str
    unit: str
    n: int
    median: float | None
    p90: float | None
    notes: str = ""
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, unit: str, values: Iterable[float | None], notes: str = "", **extra: Any) -> Measurement:
        """Median and p90 of the values that exist (None = that iteration produced no number)."""
        got = [float(v) for v in values if v is not None]
        digits = 3 if unit in ("x", "ratio", "WER") else 1
        return cls(
            name=name,
            unit=unit,
            n=len(got),
            median=round(statistics.median(got), digits) if got else None,
            p90=round(percentile(got, 0.9), digits) if got else None,
            notes=notes,
            samples=[round(v, digits + 1) for v in got],
            extra=extra,
        )

    @classmethod
    def single(cls, name: str, unit: str, value: float | None, notes: str = "", **extra: Any) -> Measurement:
        """A number measured once (e.g. a capacity): median = p90 = value."""
        return cls.of(name, unit, [value], notes, **extra)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


@dataclass
class PartResult:
    part: str
    seconds: float
    rows: list[Measurement]
    error: str | None = None


@dataclass
class Report:
    quick: bool
    started: float = field(default_factory=time.time)
    parts: list[PartResult] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine)

    def add(self, part: PartResult) -> None:
        self.parts.append(part)

    @property
    def rows(self) -> list[Measurement]:
        return [m for p in self.parts for m in p.rows]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "quick": self.quick,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "machine": {**self.machine, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "parts": [
                {"part": p.part, "seconds": round(p.seconds, 1), "error": p.error, "rows": [m.row() for m in p.rows]}
                for p in self.parts
            ],
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    def print_table(self, out: TextIO) -> None:
        print(f"{'name':46} {'unit':>5} {'n':>4} {'median':>9} {'p90':>9}  notes", file=out)
        for part in self.parts:
            print(f"-- {part.part} ({part.seconds:.0f} s){'  FAILED: ' + part.error if part.error else ''}", file=out)
            for m in part.rows:
                print(f"{m.name:46} {m.unit:>5} {m.n:>4} {_fmt(m.median):>9} {_fmt(m.p90):>9}  {m.notes}", file=out)

    def draw_chart(self, path: Path, title: str = "voice-mcp latency per stage (median and p90)") -> Path | None:
        """The millisecond rows marked `chart=True` (the per-stage latency breakdown), through `draw_chart`."""
        stages = {
            m.name: StageSummary(count=m.n, median_ms=m.median, p90_ms=m.p90, max_ms=max(m.samples))
            for m in self.rows
            if m.unit == "ms" and m.extra.get("chart") and m.median is not None and m.p90 is not None and m.samples
        }
        if not stages:
            return None
        return draw_chart(stages, path, title)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
