"""Which transport serves a converse call, and why.

`auto` uses LiveKit when it is configured, a worker answers within `settings.livekit_timeout` and somebody is
in the room to talk to; otherwise the local loop. It decides from the room's state first: when nobody is there
to talk to, or no worker is in the room (it crashed, or was never dispatched), waiting for one could only end in
the local loop, so `auto` takes the local loop at once and gets a worker dispatched in the background for the
next call. The reason is returned so the result can say it (`ConverseResult.transport_reason`). `livekit` and
`local` force one transport and fail with its error (`livekit` waits `settings.livekit_timeout` for a worker).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config import Settings

from .converse_types import RequestedTransport, TransportUnavailable, VoiceError
from .livekit import LiveKitTransport
from .transport_interface import Transport

NOT_CONFIGURED_HINT = "set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"


async def choose_transport(
    requested: RequestedTransport,
    settings: Settings,
    *,
    livekit: LiveKitTransport | Transport | None,
    local_factory: Callable[[], Transport],
) -> tuple[Transport, str]:
    """The transport for one call and the reason it was chosen. Raises VoiceError when none can serve."""
    if requested == "local":
        return local_factory(), "local requested"
    if requested == "livekit":
        if livekit is None:
            raise TransportUnavailable("LiveKit is not configured", NOT_CONFIGURED_HINT)
        return livekit, "livekit requested"

    if livekit is None:
        return _local(local_factory, "LiveKit is not configured")
    why_not = await _livekit_problem(livekit, settings)
    if why_not is None:
        return livekit, f"LiveKit worker answered in room '{settings.room}'"
    return _local(local_factory, why_not)


async def _livekit_problem(livekit: LiveKitTransport | Transport, settings: Settings) -> str | None:
    """None when LiveKit can serve a call now, else why not (bounded by settings.livekit_timeout)."""
    if isinstance(livekit, LiveKitTransport):
        try:
            presence = await livekit.presence(settings.livekit_timeout)
        except VoiceError as exc:
            return f"LiveKit unavailable: {exc.message}"
        if not presence.user:
            livekit.start()  # the worker is ready when the user comes
            return f"nobody is in LiveKit room '{settings.room}' to talk to"
        if not presence.workers:
            livekit.start()
            return (
                f"no voice-mcp worker is in LiveKit room '{settings.room}' (one is being dispatched for the next "
                "call)"
            )
        try:
            worker = await livekit.ensure_worker(settings.livekit_timeout, wait_if_dead=False)
        except VoiceError as exc:
            livekit.start()
            return f"LiveKit unavailable: {exc.message}"
        if worker.info.user_identity is None:
            return f"nobody is in LiveKit room '{settings.room}' to talk to"
        if worker.info.busy:
            return "the LiveKit worker is busy with another converse call"
        return None
    health = await livekit.health()
    return None if health.available else f"LiveKit unavailable: {health.detail}"


def _local(local_factory: Callable[[], Transport], why_not_livekit: str) -> tuple[Transport, str]:
    try:
        local = local_factory()
    except VoiceError as exc:
        raise TransportUnavailable(
            f"no transport can serve the call: {why_not_livekit}; local loop: {exc.message}", exc.hint
        ) from exc
    return local, f"{why_not_livekit}; used the local loop"
