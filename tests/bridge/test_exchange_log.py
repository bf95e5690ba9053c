"""The JSONL exchange log and `voice-mcp stats` over it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from mcp_bridge.converse_types import ConverseResult, Timings, TranscriptionFailed
from mcp_bridge.exchange_log import ExchangeLog, read_entries
from mcp_bridge.stats import percentile, summarise


def _result(total: float, stt: float) -> ConverseResult:
    return ConverseResult(
        text="a reply that must not be logged",
        heard_speech=True,
        transport="local",
        timings=Timings(total_ms=total, stt_ms=stt, first_audio_ms=100.0),
        stt_provider="faster-whisper",
        tts_provider="piper",
    )


async def test_log_records_timings_and_errors_but_no_words(tmp_path: Path) -> None:
    log = ExchangeLog.in_dir(tmp_path)
    await log.record(requested_transport="auto", message_chars=12, result=_result(900.0, 120.0))
    await log.record(
        requested_transport="local",
        message_chars=5,
        error=TranscriptionFailed("stt died", audio_path=tmp_path / "reply.wav"),
    )
    entries = read_entries(log.path)
    assert [e["ok"] for e in entries] == [True, False]
    assert entries[0]["timings"]["stt_ms"] == 120.0
    assert entries[0]["reply_chars"] == len("a reply that must not be logged")
    assert "must not be logged" not in log.path.read_text()
    assert entries[1]["error"]["code"] == "transcription_failed"


async def test_disabled_log_writes_nothing(tmp_path: Path) -> None:
    log = ExchangeLog.in_dir(tmp_path, enabled=False)
    await log.record(requested_transport="auto", message_chars=1, result=_result(1.0, 1.0))
    assert not log.path.exists()


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "exchanges.jsonl"
    path.write_text(json.dumps({"ok": True}) + "\n" + '{"ok": tr')
    assert read_entries(path) == [{"ok": True}]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.9) == 9.0
    assert percentile([7.0], 0.9) == 7.0


async def test_summary_counts_errors_and_stage_percentiles(tmp_path: Path) -> None:
    log = ExchangeLog.in_dir(tmp_path)
    for total, stt in [(1000.0, 100.0), (2000.0, 200.0), (3000.0, 300.0)]:
        await log.record(requested_transport="auto", message_chars=3, result=_result(total, stt))
    await log.record(requested_transport="auto", message_chars=3, error=RuntimeError("boom"))
    summary = summarise(read_entries(log.path), log.path)
    assert summary.exchanges == 4
    assert summary.errors == 1
    assert summary.error_rate == 0.25
    assert summary.by_transport == {"local": 3}
    assert summary.by_error == {"internal": 1}
    assert summary.stages["total_ms"].median_ms == 2000.0
    assert summary.stages["stt_ms"].max_ms == 300.0
    assert "listen_ms" not in summary.stages


async def test_stats_command_prints_json_and_draws_chart(tmp_path: Path) -> None:
    log = ExchangeLog.in_dir(tmp_path / "data")
    await log.record(requested_transport="auto", message_chars=3, result=_result(1500.0, 150.0))
    chart = tmp_path / "chart.png"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VOICE_MCP_DATA_DIR": str(tmp_path / "data")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mcp_bridge", "stats", "--json", "--chart", str(chart)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stages"]["total_ms"]["median_ms"] == 1500.0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_call_the_client_cancels_is_logged_as_cancelled_not_internal(tmp_path: Path) -> None:
    """`voice-mcp stats` counts errors by code: a client's cancellation is not a bug of ours."""
    from mcp_bridge.converse_types import ConverseRequest, ProgressCallback
    from mcp_bridge.service import VoiceService
    from mcp_bridge.transport_interface import Transport
    from tests.speech_fixtures import clean_settings

    class WaitsForever:
        name = "local"

        def __init__(self) -> None:
            self.started = asyncio.Event()

        async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
            self.started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    class OneTransport(VoiceService):
        async def choose(self, requested: object) -> tuple[Transport, str]:
            return waiting, "stand-in"  # type: ignore[return-value]

    waiting = WaitsForever()
    service = OneTransport(clean_settings(data_dir=tmp_path))
    call = asyncio.create_task(service.converse(ConverseRequest(message="hi")))
    await waiting.started.wait()
    call.cancel()
    try:
        await call
    except asyncio.CancelledError:
        pass
    [entry] = read_entries(service.exchange_log.path)
    assert entry["ok"] is False and entry["error"]["code"] == "cancelled"


async def test_stats_chart_without_matplotlib_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    """Without the bench extra (matplotlib cannot be imported) the chart is refused in one line, no traceback."""
    log = ExchangeLog.in_dir(tmp_path / "data")
    await log.record(requested_transport="auto", message_chars=3, result=_result(1500.0, 150.0))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VOICE_MCP_DATA_DIR": str(tmp_path / "data")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    no_matplotlib = (  # a None entry in sys.modules makes `import matplotlib` raise ImportError, as when absent
        "import sys; sys.modules['matplotlib'] = None; from mcp_bridge.cli import main; "
        f"sys.exit(main(['stats', '--chart', {str(tmp_path / 'chart.png')!r}]))"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", no_matplotlib],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if "matplotlib" in line]
    assert error_lines == [
        "voice-mcp stats: drawing charts needs matplotlib: pip install 'voice-mcp-bridge[bench]' "
        "(from a clone of the repository: .venv/bin/pip install -e '.[bench]')"
    ]
    assert "1 exchange in" in done.stdout and "0 errors" in done.stdout
    assert not (tmp_path / "chart.png").exists()
