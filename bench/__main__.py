"""`python -m bench [--quick] [--only NAME[,NAME]] [--out DIR]`: run the benchmarks, print a table, write JSON
and the latency chart. The parts `room` and `capacity` need the private network namespace:
`tests/netns/run .venv/bin/python -m bench`. Exit status 1 when a selected part failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from pathlib import Path

from .harness import PartResult, Report
from .parts import PARTS, Context, Part
from .speech import Speech

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse(argv: list[str] | None) -> argparse.Namespace:
    names = [p.name for p in PARTS]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few iterations, small N (CI: a few minutes)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these parts (repeat or comma-separate): {', '.join(names)}",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results.json and latency.png go here")
    parser.add_argument(
        "--load-size",
        type=_load_size,
        default=None,
        metavar="ROOMS,CALLS,AT_ONCE",
        help="size of the load part (default 20,50,4; --quick 2,5,2)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args(argv)
    only = [n.strip() for chunk in args.only for n in chunk.split(",") if n.strip()]
    unknown = [n for n in only if n not in names]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.parts = [p for p in PARTS if not only or p.name in only]
    return args


def _load_size(text: str) -> tuple[int, int, int]:
    try:
        rooms, calls, at_once = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected three whole numbers: ROOMS,CALLS,AT_ONCE (e.g. 20,50,4)") from None
    if min(rooms, calls, at_once) < 1:
        raise argparse.ArgumentTypeError("ROOMS, CALLS and AT_ONCE must be at least 1")
    return rooms, calls, at_once


def _netns_problem(part: Part) -> str | None:
    if not part.needs_netns:
        return None
    from tests.e2e_livekit.harness import inside_test_netns

    if inside_test_netns():
        return None
    return "needs the private network namespace: run via tests/netns/run .venv/bin/python -m bench"


async def run(args: argparse.Namespace) -> Report:
    report = Report(quick=args.quick)
    speech = Speech()
    await speech.load()
    ctx = Context(speech=speech, quick=args.quick, out=args.out, load_size=args.load_size)
    for part in args.parts:
        print(f"== {part.name}: {part.what}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        problem = _netns_problem(part)
        if problem is not None:
            report.add(PartResult(part.name, 0.0, [], problem))
            continue
        try:
            rows = await part.run(ctx)
            report.add(PartResult(part.name, time.perf_counter() - started, rows))
        except Exception as exc:
            traceback.print_exc()
            report.add(PartResult(part.name, time.perf_counter() - started, [], f"{type(exc).__name__}: {exc}"))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    report = asyncio.run(run(args))
    report.print_table(sys.stdout)
    path = report.write_json(args.out / "results.json")
    print(f"results: {path}", file=sys.stderr)
    chart = report.draw_chart(args.out / "latency.png")
    if chart is not None:
        print(f"chart: {chart}", file=sys.stderr)
    return 1 if any(p.error for p in report.parts) else 0


if __name__ == "__main__":
    sys.exit(main())
