"""`LocalTransport`: a converse exchange on this machine's microphone and speaker.

Order of one exchange:
1. resolve and open the speaker and (when a reply is wanted) the microphone — the microphone first, so a reply
   spoken while the assistant is still talking is captured;
2. speak the message sentence by sentence through the shared TTS (the first sentence plays while the next is
   synthesised; a sentence too long for one synthesis goes in pieces, see `agent.speech.text_chunks`); speech from
   the user meanwhile marks the result `interrupted` and, with `barge_in`, silences the assistant at once;
3. play the "listening" cue and listen until the turn ends (see `endpointing`), and return the transcript with
   timings as soon as it is ready; the "done" cue finishes playing and the devices are released after `converse`
   has returned (the next exchange and `aclose()` wait for that, so nothing outlives the transport).

The first sentence is synthesised while the devices open. The speaker's stream starts only once the first audio
is queued (a running stream would put its buffer of silence before it). The end-of-turn model
(`agent.speech.turn_model`) is loaded on the first exchange that listens, in the background, and kept; if it cannot
load, turns end by silence and `health()` says why.

The STT, TTS and VAD objects are injected: they are the one set shared with the LiveKit worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable

from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad

from agent import cues
from agent.config import Settings
from agent.speech import provider_label
from agent.speech.call_options import CallOptions, OptionRefused
from agent.speech.text_chunks import SYNTHESIS_CHUNK_CHARS, speech_chunks, split_first_clause
from agent.speech.turn_model import TurnModel, TurnModelUnavailable, find_model
from mcp_bridge.cancel_safe import finish
from mcp_bridge.converse_types import (
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
from mcp_bridge.transport_interface import TransportHealth

from .devices import resolve_device
from .echo import EchoCanceller
from .endpointing import EndpointConfig, SpeechStarted
from .listener import Heard, Listener
from .microphone import Microphone
from .player import Player
from .recording import prune_failed_replies
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
        self._settling: asyncio.Task[None] | None = None
        """The last exchange's cue draining and device closing, after its converse returned."""
        self._turn_model: asyncio.Task[TurnModel | None] | None = None
        self.turn_model_problem: str | None = None
        """Why turns end by silence although VOICE_MCP_TURN_DETECTION=model (load or run failure)."""
        self._model_broken = False

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
        return TransportHealth(
            name="local", available=True, detail=f"microphone {mic}, speaker {speaker}; {self.turn_detection()}"
        )

    def turn_detection(self) -> str:
        """How turns end, for `voice_status`; a warning when the model was asked for but is not used."""
        if self.settings.turn_detection == "silence":
            return f"end of turn: silence ({self.settings.silence_ms} ms, VOICE_MCP_TURN_DETECTION=silence)"
        problem = self.turn_model_problem
        if problem is None and self._turn_model is None:
            try:
                find_model(self.settings.turn_model)
            except TurnModelUnavailable as exc:
                problem = str(exc)
        if problem is not None:
            return (
                f"warning: the end-of-turn model is not used, turns end after {self.settings.silence_ms} ms of "
                f"silence: {problem}"
            )
        return (
            "end of turn: Smart Turn v3.2 model after a short pause, at most "
            f"{max(self.settings.silence_ms, self.settings.max_turn_silence_ms)} ms of silence"
        )

    def turn_model(self) -> asyncio.Task[TurnModel | None] | None:
        """The end-of-turn model, loading in the background on first use; None with turn_detection=silence or
        after the model failed."""
        if self.settings.turn_detection != "model" or self._model_broken:
            return None
        if self._turn_model is None:
            loading = self._load_turn_model()
            self._turn_model = asyncio.get_running_loop().create_task(loading, name="voice-mcp-turn-load")
        return self._turn_model

    async def _load_turn_model(self) -> TurnModel | None:
        try:
            return await TurnModel.load(self.settings.turn_model)
        except Exception as exc:  # TurnModelUnavailable, or anything else the loader ran into
            log.warning("end-of-turn model unavailable, turns end by silence: %s", exc)
            self.turn_model_problem = str(exc)
            return None

    def turn_model_failed(self, problem: str) -> None:
        """The model failed during a turn: use the silence rule from now on (reported by `health()`)."""
        self.turn_model_problem = f"the model failed: {problem}"
        self._model_broken = True

    async def settle(self) -> None:
        """Wait until the previous exchange has released the devices."""
        if self._settling is not None:
            await asyncio.shield(self._settling)  # a cancelled caller leaves it running, and still owned here
            self._settling = None

    async def aclose(self) -> None:
        """Waits for the exchange in progress and its settling; devices live per exchange, the shared providers
        belong to the caller (the end-of-turn model is ours)."""
        async with self._lock:
            await self.settle()
            loading, self._turn_model = self._turn_model, None
            if loading is not None:
                model = await loading
                if model is not None:
                    await model.aclose()

    async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
        started = time.perf_counter()
        async with self._lock:
            await self.settle()
            options = CallOptions(tts_=self.tts, stt_=self.stt)  # per-call voice/speed/language, as in the worker
            try:
                options.apply(request.speak, language=request.listen.language)
            except OptionRefused as exc:
                raise UnsupportedOption(exc.problem, exc.fix) from exc
            exchange = _Exchange(self, request, progress, started, options)
            try:
                return await exchange.run()
            finally:
                self._settling = exchange.settling
                options.restore()  # speaking and transcribing are over; settling only drains the cue

    # --- speaking -----------------------------------------------------------------------------------------------

    def sentences(self, text: str) -> list[str]:
        """What one TTS call each speaks: sentences, and pieces of any sentence too long for one synthesis; a long
        first sentence is cut after its first clause, so the first audio comes sooner."""
        parts = split_first_clause(speech_chunks(text, SYNTHESIS_CHUNK_CHARS, combine=False))
        return [s.strip() for s in parts if s.strip()]

    async def synthesize(self, text: str, tts: lk_tts.TTS | None = None) -> AsyncIterator[rtc.AudioFrame]:
        """Audio of `text`, one sentence after the other, as soon as each is synthesised."""
        tts = tts or self.tts
        for sentence in self.sentences(text):
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
        self.echo: EchoCanceller | None = None
        self.speak_task: asyncio.Task[None] | None = None
        self.speak_started: float | None = None
        self.speak_ended: float | None = None
        self.cues = request.listen.audio_cues
        self.tts = transport.tts
        self.settling: asyncio.Task[None] | None = None
        """Cue draining and device closing, left running when the result is ready (the transport awaits it)."""
        self._audio: asyncio.Queue[rtc.AudioFrame | BaseException | None] = asyncio.Queue()
        self._synthesis: asyncio.Task[None] | None = None

    async def run(self) -> ConverseResult:
        listening = self.request.wait_for_response
        message = self.request.message.strip()
        if message:  # the first sentence is synthesised while the devices open
            self._synthesis = asyncio.create_task(self._synthesize(message), name="voice-mcp-tts")
        listen_task: asyncio.Task[Heard] | None = None
        done = False
        try:
            await asyncio.to_thread(
                prune_failed_replies, self.settings.data_dir / "recordings", self.settings.keep_failed_audio_days
            )
            speaker = await asyncio.to_thread(resolve_device, self.settings.output_device, "output")
            mic_device = (
                await asyncio.to_thread(resolve_device, self.settings.input_device, "input") if listening else None
            )
            # a fresh echo canceller per exchange: each newly opened stream pair has its own delay, and a canceller
            # tuned to the previous pair lets echo through while it re-adapts (measured; see docs/local-loop.md)
            self.echo = echo = EchoCanceller(echo_cancellation=self.settings.echo_cancellation) if listening else None
            self.mic = Microphone(mic_device, echo=echo) if mic_device is not None else None
            if self.mic is not None:
                await self.mic.start()  # before speaking: a reply spoken over the message is not lost
            self.player = Player(speaker)
            await self.player.start()  # opened, not started: play() starts it with the first audio queued
            self.player.attach(echo)
            listener = self._listener(self.t.turn_model()) if self.mic is not None else None
            if listener is not None:
                listen_task = asyncio.create_task(listener.run(), name="voice-mcp-listen")
            await self._speak(listen_task)
            if listener is None or listen_task is None:
                result = self._result(None)
            else:
                heard = await self._listen(listener, listen_task)
                if listener.model_error is not None:
                    self.t.turn_model_failed(listener.model_error)
                result = self._result(heard)
            await self.progress(Stage.DONE, "reply received" if result.heard_speech else "no reply")
            done = True
            return result
        finally:  # no other await here: a cancelled call is cancelled again at each one, and must reach _cleanup
            if done:  # the user has their answer: the cue drains and the devices close after we return
                self.settling = asyncio.create_task(self._cleanup(listen_task), name="voice-mcp-settle")
            else:
                if self.player is not None:
                    self.player.stop()  # cancelled or failed: silent at once, nothing left to drain
                await self._cleanup(listen_task)

    async def _synthesize(self, message: str) -> None:
        try:
            async for frame in self.t.synthesize(message, self.tts):
                self._audio.put_nowait(frame)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._audio.put_nowait(exc)
        else:
            self._audio.put_nowait(None)

    def _listener(self, turn_model: asyncio.Task[TurnModel | None] | None) -> Listener:
        assert self.mic is not None
        opts = self.request.listen
        aggressiveness = opts.vad_aggressiveness
        if aggressiveness is None:
            aggressiveness = self.settings.vad_aggressiveness
        config = EndpointConfig.from_options(
            max_seconds=opts.max_seconds, min_seconds=opts.min_seconds, silence_ms=opts.silence_ms,
            vad_aggressiveness=aggressiveness, silence_detection=opts.silence_detection,
            turn_model=turn_model is not None, max_turn_silence_ms=self.settings.max_turn_silence_ms,
        )
        # the call's language is already set on the STT (CallOptions), so the transcriber asks with the STT's own
        transcriber = Transcriber(self.t.stt, provider_timeout=self.settings.provider_timeout)
        return Listener(
            self.mic, self.t.vad, transcriber, config,
            recordings_dir=self.settings.data_dir / "recordings",
            keep_failed_audio_days=self.settings.keep_failed_audio_days,
            on_speech_started=self._on_speech_started,
            early_transcription=self.t.early_transcription,
            turn_model=turn_model,
            is_echo=self.echo.hears_only_the_assistant if self.echo is not None else None,
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
            if self._synthesis is not None:
                self._synthesis.cancel()

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
            await _stop_task(self.speak_task)
            self.speak_ended = time.perf_counter()

    async def _play_message(self, message: str) -> None:
        assert self.player is not None
        self.player.begin()
        while (item := await self._audio.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            self.player.push(item)
            if not self.player.running and self.player.ready_to_play:
                await self.player.play()  # the stream starts with the first audio queued: it is heard at once
        self.player.end()
        await self.player.play()  # a piece shorter than the device's buffer
        await self.player.wait_done()

    async def _cue(self, *, start: bool) -> None:
        if not self.cues or self.player is None or not self.player.sample_rate:
            return
        make = cues.listening_started if start else cues.listening_stopped
        self.player.begin()
        self.player.push(make(self.player.sample_rate), echo_reference=False)
        self.player.end()
        await self.player.play()

    async def _listen(self, listener: Listener, listen_task: asyncio.Task[Heard]) -> Heard:
        opts = self.request.listen
        # the window opens before anybody is told it has: a user who answers the moment "listening" is announced
        # (or the cue starts) is heard as the reply, never judged as a possible echo of the message's end
        listener.start_listening()
        await self.progress(Stage.LISTENING, f"listening (up to {opts.max_seconds:g} s)")
        if not listener.speech_started.is_set():
            await self._cue(start=True)
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
        """Stop the tasks and close both devices, whatever happens meanwhile.

        Runs shielded: a cancellation that arrives again during cleanup (the client cancels, the session ends) waits
        for it to finish and is re-raised afterwards. A stream left open while its owner is garbage-collected lets
        PortAudio call freed memory and kills the process. Every step is bounded, so cleanup cannot hang either."""
        await finish(self._release(listen_task))

    async def _release(self, listen_task: asyncio.Task[Heard] | None) -> None:
        if self._synthesis is not None:
            await _stop_task(self._synthesis)
        if self.speak_task is not None:
            await _stop_task(self.speak_task)
        if listen_task is not None:
            await _stop_task(listen_task)
        if self.mic is not None:
            await _bounded(self.mic.aclose(), "closing the microphone")
        if self.player is not None:
            if self.player.running and not self.player.stopped:  # let the last cue finish (bounded)
                try:
                    async with asyncio.timeout(1.0):
                        await self.player.wait_done()
                except Exception as exc:
                    log.debug("the last cue did not finish: %s", exc)
            await _bounded(self.player.aclose(), "closing the speaker")


STOP_TIMEOUT = 5.0
"""Seconds a cancelled task of the exchange gets to finish (its own cleanup is bounded well within this)."""


async def _stop_task(task: asyncio.Task[object]) -> None:
    """Cancel `task` and wait (bounded) until it has finished; never raises."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: reported elsewhere or irrelevant once the exchange ends
        return
    task.cancel()
    _, pending = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if pending:
        log.warning("task %s did not stop within %.0f s", task.get_name(), STOP_TIMEOUT)
    elif not task.cancelled():
        task.exception()


async def _bounded(closing: Awaitable[None], what: str) -> None:
    try:
        await closing
    except Exception as exc:  # a dying device must not keep the other one open
        log.warning("%s failed: %s", what, exc)
