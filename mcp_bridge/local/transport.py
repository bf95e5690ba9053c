"""`LocalTransport`: a converse exchange on this machine's microphone and speaker.

Order of one exchange:
1. resolve and open the speaker and (when a reply is wanted) the microphone — the microphone first, so a reply
   spoken while the assistant is still talking is captured;
2. speak the message sentence by sentence through the shared TTS (the first sentence plays while the next is
   synthesised); speech from the user meanwhile marks the result `interrupted` and, with `barge_in`, silences the
   assistant at once;
3. play the "listening" cue and listen until the turn ends (see `endpointing`), play the "done" cue, and return the
   transcript with timings.

The STT, TTS and VAD objects are injected: they are the one set shared with the LiveKit worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad

from agent import cues
from agent.config import Settings
from agent.speech import provider_label
from agent.speech.call_options import CallOptions, OptionRefused
from agent.speech.sentences import sentences
from mcp_bridge.models import (
    AudioDeviceError,
    ConverseRequest,
    ConverseResult,
    ProgressCallback,
    ProviderError,
    Stage,
    Timings,
    TransportName,
    UnsupportedOption,
    VoiceError,
)
from mcp_bridge.transport import TransportHealth

from .devices import resolve_device
from .echo import EchoCanceller
from .endpointing import EndpointConfig, SpeechStarted
from .listener import Heard, Listener
from .microphone import Microphone
from .player import Player
from .transcriber import Transcriber

log = logging.getLogger(__name__)


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start) * 1000, 1)


class LocalTransport:
    """Converse through the local microphone and speaker (sounddevice/PortAudio)."""

    name: TransportName = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        stt: lk_stt.STT,
        tts: lk_tts.TTS,
        vad: lk_vad.VAD,
        early_transcription: bool = True,
    ) -> None:
        self.settings = settings
        self.stt = stt
        self.tts = tts
        self.vad = vad
        self.early_transcription = early_transcription
        self._lock = asyncio.Lock()  # one exchange at a time: there is one microphone and one speaker

    # --- Transport protocol -------------------------------------------------------------------------------------

    async def health(self) -> TransportHealth:
        idle = not self._lock.locked()  # during an exchange, PortAudio must not be re-initialised
        try:
            mic = await asyncio.to_thread(resolve_device, self.settings.input_device, "input", allow_rescan=idle)
            speaker = await asyncio.to_thread(
                resolve_device, self.settings.output_device, "output", allow_rescan=idle
            )
        except AudioDeviceError as exc:
            return TransportHealth(name="local", available=False, detail=str(exc))
        return TransportHealth(name="local", available=True, detail=f"microphone {mic}, speaker {speaker}")

    async def aclose(self) -> None:
        """Waits for the exchange in progress; devices live per exchange, the providers belong to the caller."""
        async with self._lock:
            return

    async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
        started = time.perf_counter()
        async with self._lock:
            options = CallOptions(tts_=self.tts, stt_=self.stt)  # per-call voice/speed/language, as in the worker
            try:
                options.apply(request.speak, language=request.listen.language)
            except OptionRefused as exc:
                raise UnsupportedOption(exc.problem, exc.fix) from exc
            try:
                return await _Exchange(self, request, progress, started, options).run()
            finally:
                options.restore()

    # --- speaking -----------------------------------------------------------------------------------------------

    async def synthesize(self, text: str, tts: lk_tts.TTS | None = None) -> AsyncIterator[rtc.AudioFrame]:
        """Audio of `text`, one sentence after the other, as soon as each is synthesised."""
        tts = tts or self.tts
        for sentence in sentences(text):
            try:
                async with tts.synthesize(sentence) as stream:
                    async for audio in stream:
                        yield audio.frame
            except VoiceError:
                raise
            except Exception as exc:
                log.warning("speech synthesis failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
                raise ProviderError(
                    f"Speech synthesis failed: {exc}.", "Check the TTS provider (VOICE_MCP_TTS)."
                ) from exc


class _Exchange:
    """One converse call: owns the devices and tasks for its duration."""

    def __init__(
        self,
        transport: LocalTransport,
        request: ConverseRequest,
        progress: ProgressCallback,
        started: float,
        options: CallOptions,
    ) -> None:
        self.t = transport
        self.settings = transport.settings
        self.request = request
        self.progress = progress
        self.options = options
        self.started = started
        self.interrupted = False
        self.player: Player | None = None
        self.mic: Microphone | None = None
        self.speak_task: asyncio.Task[None] | None = None
        self.speak_started: float | None = None
        self.speak_ended: float | None = None
        self.cues = request.listen.audio_cues
        self.tts = transport.tts

    async def run(self) -> ConverseResult:
        listening = self.request.wait_for_response
        speaker = await asyncio.to_thread(resolve_device, self.settings.output_device, "output")
        mic_device = await asyncio.to_thread(resolve_device, self.settings.input_device, "input") if listening else None
        # a fresh echo canceller per exchange: each newly opened stream pair has its own delay, and a canceller
        # tuned to the previous pair lets echo through while it re-adapts (measured; see docs/local-loop.md)
        echo = EchoCanceller(echo_cancellation=self.settings.echo_cancellation) if listening else None
        self.player = Player(speaker, echo=echo)
        self.mic = Microphone(mic_device, echo=echo) if mic_device is not None else None
        listen_task: asyncio.Task[Heard] | None = None
        try:
            if self.mic is not None:
                await self.mic.start()  # before speaking: a reply spoken over the message is not lost
            await self.player.start()
            listener = self._listener() if self.mic is not None else None
            if listener is not None:
                listen_task = asyncio.create_task(listener.run(), name="voice-mcp-listen")
            await self._speak(listen_task)
            heard = await self._listen(listener, listen_task) if listener is not None and listen_task else None
            result = self._result(heard)
            await self.progress(Stage.DONE, "reply received" if result.heard_speech else "no reply")
            return result
        finally:
            await self._cleanup(listen_task)

    def _listener(self) -> Listener:
        assert self.mic is not None
        opts = self.request.listen
        aggressiveness = opts.vad_aggressiveness
        if aggressiveness is None:
            aggressiveness = self.settings.vad_aggressiveness
        config = EndpointConfig.from_options(
            max_seconds=opts.max_seconds, min_seconds=opts.min_seconds, silence_ms=opts.silence_ms,
            vad_aggressiveness=aggressiveness, silence_detection=opts.silence_detection,
        )
        # the call's language is already set on the STT (CallOptions), so the transcriber asks with the STT's own
        transcriber = Transcriber(self.t.stt, provider_timeout=self.settings.provider_timeout)
        return Listener(
            self.mic, self.t.vad, transcriber, config,
            recordings_dir=self.settings.data_dir / "recordings",
            on_speech_started=self._on_speech_started,
            early_transcription=self.t.early_transcription,
        )

    def _on_speech_started(self, event: SpeechStarted) -> None:
        if not event.during_playback:
            return
        self.interrupted = True
        if self.settings.barge_in and self.player is not None:
            dropped = self.player.stop()
            log.info("user spoke over the assistant: stopped speaking (%.1f s unsaid)", dropped)
            if self.speak_task is not None:
                self.speak_task.cancel()

    async def _speak(self, listen_task: asyncio.Task[Heard] | None) -> None:
        assert self.player is not None
        message = self.request.message.strip()
        if not message:
            return
        await self.progress(Stage.SPEAKING, message)
        self.speak_started = time.perf_counter()
        self.speak_task = asyncio.create_task(self._play_message(message), name="voice-mcp-speak")
        waiting: set[asyncio.Task[None] | asyncio.Task[Heard]] = {self.speak_task}
        if listen_task is not None:
            waiting.add(listen_task)
        try:
            while not self.speak_task.done():
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if listen_task is not None and listen_task in done:
                    waiting.discard(listen_task)
                    if listen_task.exception() is not None:  # e.g. the microphone died: stop talking
                        raise listen_task.exception()  # type: ignore[misc]
            with contextlib.suppress(asyncio.CancelledError):
                self.speak_task.result()
        finally:
            if not self.speak_task.done():
                self.speak_task.cancel()
                with contextlib.suppress(BaseException):
                    await self.speak_task
            self.speak_ended = time.perf_counter()

    async def _play_message(self, message: str) -> None:
        assert self.player is not None
        self.player.begin()
        async for frame in self.t.synthesize(message, self.tts):
            self.player.push(frame)
        self.player.end()
        await self.player.wait_done()

    async def _cue(self, *, start: bool) -> None:
        if not self.cues or self.player is None or not self.player.sample_rate:
            return
        make = cues.listening_started if start else cues.listening_stopped
        self.player.begin()
        self.player.push(make(self.player.sample_rate), echo_reference=False)
        self.player.end()

    async def _listen(self, listener: Listener, listen_task: asyncio.Task[Heard]) -> Heard:
        opts = self.request.listen
        await self.progress(Stage.LISTENING, f"listening (up to {opts.max_seconds:g} s)")
        if not listener.speech_started.is_set():
            await self._cue(start=True)
        listener.start_listening()
        ended = asyncio.create_task(listener.turn_ended.wait())
        try:
            await asyncio.wait({ended, listen_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not listen_task.done() or listen_task.exception() is None:
            await self._cue(start=False)
            if listener.speech_started.is_set():
                await self.progress(Stage.TRANSCRIBING, "transcribing")
        return await listen_task

    def _result(self, heard: Heard | None) -> ConverseResult:
        assert self.player is not None
        first_audio = self.player.first_audio_at if self.speak_started is not None else None
        timings = Timings(
            first_audio_ms=_ms(self.started, first_audio),
            speak_ms=_ms(first_audio or self.speak_started, self.speak_ended) if self.speak_started else None,
        )
        result = ConverseResult(
            text="", heard_speech=False, transport="local", timings=timings,
            tts_provider=provider_label(self.tts) if self.speak_started else None,
            interrupted=self.interrupted, ended_by="not_waiting",
            ignored_options=self.options.ignored(
                spoke=first_audio is not None, transcribed=heard is not None and heard.heard_speech
            ),
        )
        if heard is None:
            return result
        timings.listen_ms = _ms(heard.listen_started, heard.speech_ended or heard.turn_ended)
        if heard.heard_speech:
            timings.end_of_speech_to_result_ms = _ms(heard.speech_ended, heard.result_ready)
            timings.stt_ms = round(heard.stt_ms, 1) if heard.stt_ms is not None else None
        result.text = heard.text
        result.heard_speech = heard.heard_speech
        result.ended_by = heard.ended_by
        result.stt_provider = provider_label(self.t.stt)
        result.interrupted = self.interrupted or heard.barge_in
        return result

    async def _cleanup(self, listen_task: asyncio.Task[Heard] | None) -> None:
        if listen_task is not None and not listen_task.done():
            listen_task.cancel()
            with contextlib.suppress(BaseException):
                await listen_task
        if self.mic is not None:
            await self.mic.aclose()
        if self.player is not None:
            if not self.player.stopped:  # let the last cue finish (bounded)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await self.player.wait_done()
            await self.player.aclose()
