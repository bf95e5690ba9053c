"""`python -m bench.worker_threads start`: the voice-mcp worker with every job in a thread of one process.

Only for the capacity benchmark's comparison of livekit's two job executors (`BENCH_WORKER_EXECUTOR=thread`):
the product runs one process per room (`python -m agent start`); docs/performance.md says why.
"""

from __future__ import annotations

from livekit.agents import JobExecutorType
from livekit.agents.cli import proto
from livekit.agents.cli.cli import _run_worker  # as agent.__main__ (livekit's thin `start`)

from agent.config import load_settings
from agent.worker import build_server

if __name__ == "__main__":
    server = build_server(load_settings())
    server._job_executor_type = JobExecutorType.THREAD  # livekit takes it only as a constructor argument
    _run_worker(server, proto.CliArgs(log_level="INFO", log_format="json", dev=False))
