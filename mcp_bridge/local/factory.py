"""Building a `LocalTransport` from the settings.

`VoiceService` builds the speech providers once (`agent.speech.build_stt/build_tts/build_vad`) and passes them in;
they are the same kind of objects the worker builds in its own process, not shared with it. Whatever is not
passed is built here from the settings — and then belongs to the caller, who closes it (`LocalTransport.aclose()`
does not close providers).
"""

from __future__ import annotations

from typing import Any

from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad

from agent.config import Settings

from .transport import LocalTransport


def build_local_transport(
    settings: Settings,
    *,
    stt: lk_stt.STT | None = None,
    tts: lk_tts.TTS | None = None,
    vad: lk_vad.VAD | None = None,
    **options: Any,
) -> LocalTransport:
    """A `LocalTransport`, building whichever of stt/tts/vad is not given from `settings` (`agent.speech`)."""
    if stt is None or tts is None or vad is None:
        from agent import speech

        if stt is None:
            stt = speech.build_stt(settings)
        if tts is None:
            tts = speech.build_tts(settings)
        if vad is None:
            vad = speech.build_vad(settings)
    return LocalTransport(settings, stt=stt, tts=tts, vad=vad, **options)
