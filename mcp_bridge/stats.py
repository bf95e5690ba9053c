"""`voice-mcp stats`: summarise the exchange log — counts, error rate, latency percentiles per stage."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from agent.config import Settings
from agent.package_info import install_command

from .converse_types import Timings
from .exchange_log import LOG_NAME, read_entries

STAGES = [name for name in Timings.model_fields if name != "total_ms"] + ["total_ms"]


class StageSummary(BaseModel):
    count: int
    median_ms: float
    p90_ms: float
    max_ms: float


class LogSummary(BaseModel):
    log: str
    exchanges: int
    errors: int
    error_rate: float
    by_transport: dict[str, int]
    by_error: dict[str, int]
    stages: dict[str, StageSummary]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def summarise(entries: list[dict[str, Any]], log: Path) -> LogSummary:
    errors = [e for e in entries if not e.get("ok", False)]
    stages: dict[str, StageSummary] = {}
    for stage in STAGES:
        values = [
            float(e["timings"][stage])
            for e in entries
            if isinstance(e.get("timings"), dict) and e["timings"].get(stage) is not None
        ]
        if values:
            stages[stage] = StageSummary(
                count=len(values),
                median_ms=round(statistics.median(values), 1),
                p90_ms=round(percentile(values, 0.9), 1),
                max_ms=round(max(values), 1),
            )
    return LogSummary(
        log=str(log),
        exchanges=len(entries),
        errors=len(errors),
        error_rate=round(len(errors) / len(entries), 4) if entries else 0.0,
        by_transport=dict(Counter(str(e["transport"]) for e in entries if e.get("transport"))),
        by_error=dict(Counter(str(e["error"].get("code")) for e in errors if isinstance(e.get("error"), dict))),
        stages=stages,
    )


def print_summary(summary: LogSummary, out: TextIO) -> None:
    print(
        f"{_count(summary.exchanges, 'exchange')} in {summary.log}; {_count(summary.errors, 'error')} "
        f"({summary.error_rate:.1%})",
        file=out,
    )
    if summary.by_transport:
        print("transports: " + ", ".join(f"{k} {v}" for k, v in summary.by_transport.items()), file=out)
    if summary.by_error:
        print("errors: " + ", ".join(f"{k} {v}" for k, v in summary.by_error.items()), file=out)
    if summary.stages:
        print(f"{'stage':32} {'n':>5} {'median ms':>10} {'p90 ms':>10} {'max ms':>10}", file=out)
        for name, s in summary.stages.items():
            print(f"{name:32} {s.count:>5} {s.median_ms:>10.1f} {s.p90_ms:>10.1f} {s.max_ms:>10.1f}", file=out)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class ChartUnavailable(RuntimeError):
    """Charts need matplotlib, which only the `bench` extra installs."""


def draw_chart(stages: dict[str, StageSummary], path: Path, title: str) -> Path:
    """A horizontal bar chart of median and p90 per stage (matplotlib, from the [bench] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChartUnavailable(f"drawing charts needs matplotlib: {install_command('bench')}") from exc
    names = list(stages)
    medians = [stages[n].median_ms for n in names]
    p90s = [stages[n].p90_ms for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    positions = range(len(names))
    ax.barh([p + 0.2 for p in positions], p90s, height=0.4, label="p90", color="#f4a261")
    ax.barh([p - 0.2 for p in positions], medians, height=0.4, label="median", color="#2a9d8f")
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_stats(settings: Settings, *, chart: str | None = None, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    log = settings.data_dir / LOG_NAME
    summary = summarise(read_entries(log), log)
    if as_json:
        print(json.dumps(summary.model_dump(), indent=2), file=out)
    else:
        print_summary(summary, out)
    if chart:
        if not summary.stages:
            print("no timings to chart yet", file=sys.stderr)
            return 1
        try:
            draw_chart(summary.stages, Path(chart), "voice-mcp exchanges: latency per stage")
        except ChartUnavailable as exc:
            print(f"voice-mcp stats: {exc}", file=sys.stderr)
            return 1
        print(f"chart written to {chart}", file=sys.stderr)
    return 0
