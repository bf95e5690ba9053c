"""Last-resort text-to-speech: the `espeak-ng` binary as a livekit-agents `tts.TTS`.

`espeak-ng --stdout` writes a WAV stream; PCM is forwarded to livekit's `AudioEmitter` as it arrives, so playback
can start before espeak has finished. Needs the Debian/Ubuntu package `espeak-ng` (or the distribution's
equivalent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import subprocess

import numpy as np
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, tts
from livekit.agents.utils import shortuuid

from .audio import WavStreamParser
from .errors import ProviderUnavailable

ESPEAK_SAMPLE_RATE = 22050
ESPEAK_DEFAULT_WPM = 175
ESPEAK_FIX = "install espeak-ng (Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng)"


def find_espeak() -> str | None:
    return shutil.which("espeak-ng")


@functools.lru_cache(maxsize=64)
def espeak_has_voice(binary: str, voice: str) -> bool:
    """Whether `espeak-ng -v voice` works (names, languages and variants like `en-gb+f3`); asked once per name."""
    try:
        done = subprocess.run([binary, "-q", "-v", voice, ""], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and b"does not exist" not in done.stderr


class EspeakTTS(tts.TTS):
    """espeak-ng voice (`voice` is an espeak voice name such as `en-us`)."""

    def __init__(self, *, voice: str = "en-us", speed: float = 1.0, binary: str | None = None) -> None:
        resolved = binary or find_espeak()
        if resolved is None:
            raise ProviderUnavailable("espeak", "the espeak-ng program is not installed", ESPEAK_FIX)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=ESPEAK_SAMPLE_RATE, num_channels=1
        )
        self._binary = resolved
        self._voice = voice
        self._speed = speed

    @property
    def model(self) -> str:
        return self._voice

    @property
    def provider(self) -> str:
        return "espeak"

    @property
    def voice(self) -> str:
        return self._voice

    @property
    def speed(self) -> float:
        return self._speed

    def update_options(self, *, speed: float | None = None, voice: str | None = None) -> None:
        """Change the rate and/or the voice for later requests; `ValueError` for a voice espeak-ng does not have."""
        if voice is not None and voice != self._voice:
            if not espeak_has_voice(self._binary, voice):
                raise ValueError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")
            self._voice = voice
        if speed is not None:
            self._speed = speed

    def command(self) -> list[str]:
        wpm = int(min(max(ESPEAK_DEFAULT_WPM * self._speed, 80), 500))
        return [self._binary, "-v", self._voice, "-s", str(wpm), "-b", "1", "--stdin", "--stdout"]

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts
        self._command = tts.command()

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=shortuuid(), sample_rate=ESPEAK_SAMPLE_RATE, num_channels=1, mime_type="audio/pcm"
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise APIConnectionError(f"cannot start espeak-ng: {exc}", retryable=False) from exc

        writer: asyncio.Task[None] | None = None
        try:
            assert proc.stdin and proc.stdout and proc.stderr
            stdin = proc.stdin

            async def feed_text() -> None:  # concurrently with reading, so a long text cannot deadlock
                stdin.write(self.input_text.encode("utf-8") + b"\n")
                with contextlib.suppress(ConnectionError):
                    await stdin.drain()
                stdin.close()

            writer = asyncio.create_task(feed_text())

            await _pump_audio(proc.stdout, output_emitter)
            await writer
            stderr = (await proc.stderr.read()).decode(errors="replace").strip()
            if await proc.wait() != 0:
                raise APIConnectionError(f"espeak-ng exited with {proc.returncode}: {stderr}", retryable=False)
            output_emitter.flush()
        except ValueError as exc:
            raise APIConnectionError(f"espeak-ng output unreadable: {exc}", retryable=False) from exc
        finally:
            if writer is not None and not writer.done():
                writer.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def _pump_audio(stdout: asyncio.StreamReader, output_emitter: tts.AudioEmitter) -> None:
    """espeak-ng's WAV output, as it arrives, into `output_emitter` as mono PCM at `ESPEAK_SAMPLE_RATE`."""
    parser = WavStreamParser()
    resampler: rtc.AudioResampler | None = None
    carry = b""
    while chunk := await stdout.read(8192):
        pcm = carry + parser.feed(chunk)
        if not pcm:
            continue
        usable = len(pcm) - len(pcm) % 2
        pcm, carry = pcm[:usable], pcm[usable:]
        fmt = parser.format
        assert fmt is not None
        if fmt.num_channels != 1:
            raise APIConnectionError("espeak-ng produced multi-channel audio", retryable=False)
        if fmt.sample_rate != ESPEAK_SAMPLE_RATE:
            resampler = resampler or rtc.AudioResampler(fmt.sample_rate, ESPEAK_SAMPLE_RATE)
            samples = np.frombuffer(pcm, dtype=np.int16)
            frame = rtc.AudioFrame(pcm, fmt.sample_rate, 1, samples.size)
            for out in resampler.push(frame):
                output_emitter.push(out.data.tobytes())
        else:
            output_emitter.push(pcm)
    if resampler is not None:
        for out in resampler.flush():
            output_emitter.push(out.data.tobytes())
