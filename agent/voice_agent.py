"""The livekit-agents `Agent` of the worker and the adapter that lets `ConverseService` drive its session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings, StopResponse, llm, stt, tts
from livekit.agents.voice.events import AgentStateChangedEvent, ErrorEvent
from livekit.agents.voice.room_io import TextInputEvent

from . import cues
from .converse_service import ConverseService, Cue, OptionsRefused, SpeakOutcome
from .playback import FIRST_AUDIO_WITHIN, nothing_played_reason, somebody_listens, wait_for_listener
from .protocol import OptionName, SpeakOptions, Utterance
from .segment_stt import transcribe_segments
from .speech.call_options import CallOptions, OptionRefused
from .speech.text_chunks import speech_chunks
from .speech.vad_tap import TappedVAD
from .turn_stages import MARKER

logger = logging.getLogger(__name__)

CUE_RATE = 48000

LLM_INSTRUCTIONS = (
    "You are the voice of an AI assistant that is busy with a task. The user is talking to you while the "
    "assistant works; everything the user says is passed on to the assistant. Answer briefly and in plain "
    "spoken language, and say that you passed the message on when the user asks for something to be done."
)


def utterance_from_message(message: llm.ChatMessage) -> Utterance:
    metrics = message.metrics or {}
    delay = metrics.get("transcription_delay")
    return Utterance(
        text=message.text_content or "",
        source="voice",
        started_speaking_at=metrics.get("started_speaking_at"),
        stopped_speaking_at=metrics.get("stopped_speaking_at"),
        transcription_delay_ms=None if delay is None else round(delay * 1000, 1),
    )


class VoiceMcpAgent(Agent):
    """Routes every complete user turn to `ConverseService`; the LLM (if any) answers only unclaimed turns."""

    def __init__(
        self,
        service: ConverseService,
        *,
        llm_enabled: bool,
        echo: bool = False,
        segments: TappedVAD | None = None,
    ) -> None:
        """`echo`: say back what was heard (console mode without an LLM: a microphone/STT/TTS check).
        `segments`: the session's VAD; its speech segments are transcribed as they close (`agent.segment_stt`)
        instead of by livekit's `stt.StreamAdapter`, which would run a second VAD on the same audio."""
        super().__init__(instructions=LLM_INSTRUCTIONS)
        self._service = service
        self._llm_enabled = llm_enabled
        self._echo = echo
        self._segments = segments

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        recognizer = self.session.stt
        if self._segments is None or recognizer is None:
            async for event in Agent.default.stt_node(self, audio, model_settings):
                yield event
            return
        async for event in transcribe_segments(audio, segments=self._segments, recognizer=recognizer):
            yield event

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        utterance = utterance_from_message(new_message)
        if self._segments is not None:
            logger.info("%s%s", MARKER, self._segments.stages.report())
            self._segments.stages.clear()
        if self._echo and utterance.text.strip():
            self.session.say(f"I heard: {utterance.text}")
            raise StopResponse()
        claimed = self._service.on_user_turn(utterance)
        if claimed or not self._llm_enabled:
            raise StopResponse()


def text_input_handler(
    service: ConverseService, *, llm_enabled: bool
) -> Callable[[AgentSession, TextInputEvent], Coroutine[None, None, None]]:
    """Chat typed in a LiveKit frontend counts as a user turn, like speech."""

    async def handle(session: AgentSession, event: TextInputEvent) -> None:
        claimed = service.on_user_turn(Utterance(text=event.text, source="text"))
        if not claimed and llm_enabled:  # what livekit's default text callback does, through the public API
            await session.interrupt()
            session.generate_reply(user_input=event.text)

    return handle


class AgentSessionPort:
    """`SessionPort` over a running `AgentSession` (see `agent.converse_service`)."""

    def __init__(
        self,
        session: AgentSession,
        *,
        vad_tuner: Callable[[int, int | None], None] | None = None,
        tts_: tts.TTS | None = None,
        stt_: stt.STT | None = None,
    ) -> None:
        """`tts_`/`stt_`: the session's providers, for per-call voice, speed and language."""
        self._session = session
        self._vad_tuner = vad_tuner
        self._options = CallOptions(tts_=tts_, stt_=stt_)

    def apply_options(self, speak: SpeakOptions, language: str | None) -> None:
        try:
            self._options.apply(speak, language=language)
        except OptionRefused as exc:
            raise OptionsRefused(str(exc.problem), exc.fix) from exc

    def ignored_options(self, *, spoke: bool, transcribed: bool) -> list[OptionName]:
        return self._options.ignored(spoke=spoke, transcribed=transcribed)

    def restore_options(self) -> None:
        self._options.restore()

    def play_cue(self, cue: Cue) -> None:
        if not somebody_listens(self._session):
            return  # nobody would hear it, and a cue waiting for a listener must not be interrupted (agent.playback)
        frame = cues.listening_started(CUE_RATE) if cue == "listening_started" else cues.listening_stopped(CUE_RATE)

        async def audio() -> AsyncIterator[rtc.AudioFrame]:
            yield frame

        try:
            # interruptible: livekit-agents skips a user turn that ends while uninterruptible speech is current, and
            # a chime must never cost the user's words
            self._session.say("", audio=audio(), allow_interruptions=True, add_to_chat_ctx=False)
        except RuntimeError as exc:  # the session is closing: no cue to play
            logger.debug("cue not played: %s", exc)

    async def speak(self, text: str, *, allow_interruptions: bool, within: float) -> SpeakOutcome:
        return await self._speak(text, allow_interruptions=allow_interruptions, within=within)

    async def _speak(self, text: str, *, allow_interruptions: bool, within: float) -> SpeakOutcome:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        first_audio: asyncio.Future[float] = loop.create_future()
        errors: list[str] = []

        def on_state(event: AgentStateChangedEvent) -> None:
            if event.new_state == "speaking" and not first_audio.done():
                first_audio.set_result(time.monotonic())

        def on_error(event: ErrorEvent) -> None:
            errors.append(str(getattr(event.error, "error", event.error)))

        bound = min(within, FIRST_AUDIO_WITHIN)
        if not await wait_for_listener(self._session, bound):  # before say(): see agent.playback
            error = f"no audio was played within {bound:.0f} s: {nothing_played_reason(self._session)}"
            return SpeakOutcome(interrupted=True, error=error)
        self._session.on("agent_state_changed", on_state)
        self._session.on("error", on_error)
        # queued together (no gaps between parts); an interruption stops the parts still to come
        handles = [self._session.say(part, allow_interruptions=allow_interruptions) for part in speech_parts(text)]
        interrupted = False
        overdue: list[str] = []

        def first_audio_overdue() -> None:  # a first call must not wait the whole message's bound in silence
            if not first_audio.done():
                overdue.append(f"no audio was played within {bound:.0f} s: {nothing_played_reason(self._session)}")
                for handle in handles:
                    if not handle.done():
                        handle.interrupt(force=True)

        watchdog = loop.call_later(bound, first_audio_overdue)
        try:
            async with asyncio.timeout(max(within - (time.monotonic() - started), 0.0)):
                for handle in handles:
                    await handle
                    if handle.interrupted:
                        interrupted = True
                        break
        except TimeoutError:
            return SpeakOutcome(interrupted=True, error=f"speaking did not finish within {within:.0f} s")
        finally:
            watchdog.cancel()
            for handle in handles:
                if not handle.done():
                    handle.interrupt(force=True)
            self._session.off("agent_state_changed", on_state)
            self._session.off("error", on_error)
        if not first_audio.done():
            if overdue or errors:
                return SpeakOutcome(interrupted=True, error="; ".join([*overdue, *errors]))
            if not interrupted:  # finished without a single frame played: not spoken, whatever the handles say
                return SpeakOutcome(
                    interrupted=False, error=f"the message was not played: {nothing_played_reason(self._session)}"
                )
            return SpeakOutcome(interrupted=True)  # the user spoke before the first word
        audio_at = first_audio.result()
        return SpeakOutcome(
            interrupted=interrupted, first_audio_s=audio_at - started, speak_s=time.monotonic() - audio_at
        )

    def tune_listening(self, silence_ms: int, vad_aggressiveness: int | None) -> None:
        if self._vad_tuner is not None:
            with contextlib.suppress(Exception):
                self._vad_tuner(silence_ms, vad_aggressiveness)

    def user_speaking(self) -> bool:
        return self._session.user_state == "speaking"

    def user_identity(self) -> str | None:
        try:
            room_io = self._session.room_io
        except RuntimeError:
            return None
        linked = room_io.linked_participant
        return linked.identity if linked is not None else None


SPEECH_PART_CHARS = 1500


def speech_parts(text: str, limit: int = SPEECH_PART_CHARS) -> list[str]:
    """`text` cut at sentence ends into parts of at most `limit` characters (a longer sentence at a space).

    livekit-agents' transcript synchronizer re-measures the pending text for every word it releases, which is
    quadratic in the length of one `say()`: a 50 kB message would stall the worker's event loop for minutes.
    Parts of a few sentences keep that cost small; joined they are exactly the original words.
    """
    return speech_chunks(text, limit) or [text]
