"""The voice-mcp LiveKit worker: an `AgentServer` whose jobs serve the bridge's converse calls in a room.

Run it with `python -m agent start` (production), `dev` (development defaults) or `console` (talk to the session
locally). It registers with explicit dispatch under `settings.agent_name`: the bridge dispatches it to its room.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import NOT_GIVEN, AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents.voice.room_io import RoomOptions, TextInputOptions
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import openai  # plugins register on import, which livekit allows on the main thread only

from .config import Settings, load_settings
from .converse_rpc import register_message_streams, register_rpc
from .converse_service import ConverseService
from .linking import AWAITING_USER, UserLinker
from .page_controls import register_page_controls
from .participants import is_bridge, workers_in_serving_order
from .protocol import (
    ATTR_ROLE,
    PROTOCOL_VERSION,
    RPC_PING,
    TOPIC_PROGRESS,
    TOPIC_TURN,
    WORKER_IDENTITY_PREFIX,
    Progress,
    TurnNotice,
    Utterance,
)
from .room_session import PAUSE_MS, RoomSession, build_room_session
from .speaker_track import SpeakerTrack
from .speech import build_room_vad, build_stt, build_tts, provider_label
from .stream_inbox import StreamInbox
from .turn_taking import load_turn_model
from .voice_agent import AgentSessionPort, VoiceMcpAgent, text_input_handler
from .warmup import available_memory_mb, idle_processes, lower_priority_while_idle, restore_priority, warm_process

logger = logging.getLogger(__name__)

# --- process setup: load the models once per job process, before a job arrives -----------------------------------


def prewarm(proc: JobProcess) -> None:
    """Runs in every job process (or job thread, `VOICE_MCP_JOB_EXECUTOR=thread`) before it is offered a job.

    The weights (Whisper, Piper, Smart Turn) are loaded once per process (`agent.speech.model_weights`): a job
    thread builds only its own providers around them and its own Silero VAD (tuned per call, so never shared). A
    job process warms at a lower CPU priority, so a process loading in the background does not take the cores
    from a job that is speaking; a job thread keeps the priority (niceness is per thread on Linux, and the threads
    a job starts, the Rust SDK's included, would inherit it)."""
    nice = lower_priority_while_idle() if proc.executor_type == JobExecutorType.PROCESS else None
    settings = load_settings()
    vad = build_room_vad(settings, silence_ms=PAUSE_MS)  # segments for early STT; the turn rule is agent.turn_taking
    stt = build_stt(settings, vad=vad)
    tts = build_tts(settings)
    asyncio.run(warm_process(stt, tts))  # no event loop runs here yet; the job gets its own
    turn_model, turn_model_problem = load_turn_model(settings)
    proc.userdata.update(
        settings=settings,
        vad=vad,
        stt=stt,
        tts=tts,
        idle_nice=nice,
        turn_model=turn_model,
        turn_model_problem=turn_model_problem,
    )


def build_llm(settings: Settings) -> openai.LLM | None:
    if not settings.llm_model:
        return None
    return openai.LLM(
        model=settings.llm_model,
        base_url=settings.llm_base_url or settings.openai_base_url or NOT_GIVEN,
        api_key=settings.openai_api_key or "unused",
    )


async def accept(request: JobRequest) -> None:
    await request.accept(
        name="voice-mcp", identity=f"{WORKER_IDENTITY_PREFIX}{request.id}", attributes={ATTR_ROLE: "worker"}
    )


# --- one job: one room -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobParts:
    """What one job builds (or takes from its warmed process) before it joins the room."""

    settings: Settings
    stt: lk_stt.STT
    tts: lk_tts.TTS
    llm: openai.LLM | None
    room_session: RoomSession


async def entrypoint(ctx: JobContext) -> None:
    restore_priority(ctx.proc.userdata.get("idle_nice"))
    parts = _job_parts(ctx.proc.userdata)
    service = _converse_service(parts, ctx.room)
    if ctx.is_fake_job():  # `python -m agent console`: this computer's microphone, no room and no bridge
        agent = VoiceMcpAgent(
            service, llm_enabled=parts.llm is not None, echo=parts.llm is None, segments=parts.room_session.segments
        )
        await parts.room_session.session.start(agent, record=False)
        return
    await _join_room(ctx, parts, service)
    if await _another_worker_serves(ctx.room):
        ctx.shutdown("another voice-mcp worker serves this room")
        return
    logger.info(
        "voice-mcp worker ready in room %s (protocol v%d, llm=%s)",
        ctx.room.name,
        PROTOCOL_VERSION,
        parts.settings.llm_model,
    )


def _job_parts(userdata: dict[str, Any]) -> JobParts:
    """The providers warmed in `prewarm`, or built now when the process was not warmed (console, tests)."""
    settings: Settings = userdata.get("settings") or load_settings()
    vad = userdata.get("vad") or build_room_vad(settings, silence_ms=PAUSE_MS)
    stt_ = userdata.get("stt") or build_stt(settings, vad=vad)
    tts_ = userdata.get("tts") or build_tts(settings)
    llm = build_llm(settings)
    if "turn_model" in userdata:
        turn_model, turn_model_problem = userdata["turn_model"], userdata["turn_model_problem"]
    else:
        turn_model, turn_model_problem = load_turn_model(settings)
    room_session = build_room_session(
        settings, vad=vad, stt=stt_, tts=tts_, llm=llm, turn_model=turn_model, turn_model_problem=turn_model_problem
    )
    return JobParts(settings=settings, stt=stt_, tts=tts_, llm=llm, room_session=room_session)


def _converse_service(parts: JobParts, room: rtc.Room) -> ConverseService:
    """The service that answers the bridge's converse calls, sending progress to the caller through `room`."""

    async def send_progress(caller: str, packet: Progress) -> None:
        await room.local_participant.publish_data(
            packet.model_dump_json(), reliable=True, destination_identities=[caller], topic=TOPIC_PROGRESS
        )

    settings = parts.settings
    return ConverseService(
        AgentSessionPort(
            parts.room_session.session, vad_tuner=parts.room_session.tune_listening, tts_=parts.tts, stt_=parts.stt
        ),
        agent_name=settings.agent_name,
        progress=send_progress,
        barge_in=settings.barge_in,
        llm=settings.llm_model if parts.llm is not None else None,
        stt_provider=_label(provider_label, parts.stt),
        tts_provider=_label(provider_label, parts.tts),
        default_silence_ms=settings.silence_ms,
        default_vad_aggressiveness=settings.vad_aggressiveness,
        announce=_turn_announcer(room, settings.bridge_identity),
    )


def _turn_announcer(room: rtc.Room, bridge_identity: str) -> Callable[[Utterance], None]:
    """Tells the bridges in the room about each turn the job takes, so that a turn held by a job that dies (or in an
    answer that never arrives) is still returned by a later call (`mcp_bridge.livekit.turn_ledger`)."""
    sending: set[asyncio.Task[None]] = set()

    async def send(utterance: Utterance) -> None:
        bridges = [p.identity for p in room.remote_participants.values() if is_bridge(p, bridge_identity)]
        if not bridges:
            logger.info("user turn held by this job only (no bridge in the room to tell)")
            return
        try:
            await room.local_participant.publish_data(
                TurnNotice(utterance=utterance).model_dump_json(),
                reliable=True,
                destination_identities=bridges,
                topic=TOPIC_TURN,
            )
        except Exception as exc:  # the job still holds the turn and returns it with the next call
            logger.warning("could not tell the bridge about a user turn: %s", exc)

    def announce(utterance: Utterance) -> None:
        if not room.isconnected():
            return
        task = asyncio.get_running_loop().create_task(send(utterance))
        sending.add(task)
        task.add_done_callback(sending.discard)

    return announce


async def _join_room(ctx: JobContext, parts: JobParts, service: ConverseService) -> None:
    """Connect, start the session on the room, and serve the bridge's calls and the page's buttons."""
    room = ctx.room
    session = parts.room_session.session
    llm_enabled = parts.llm is not None
    inbox = StreamInbox()
    register_message_streams(room, inbox)
    await ctx.connect()  # before the session: RoomIO linked to a given identity needs the local participant

    await session.start(
        VoiceMcpAgent(service, llm_enabled=llm_enabled, segments=parts.room_session.segments),
        room=room,
        room_options=RoomOptions(
            participant_identity=AWAITING_USER,
            close_on_disconnect=False,  # the room is persistent: users come and go, the worker stays
            audio_input=False,  # UserLinker's DeviceAudioInput hears the user's device that spoke last
            text_input=TextInputOptions(text_input_cb=text_input_handler(service, llm_enabled=llm_enabled)),
        ),
        record=False,
    )
    UserLinker(room, session, bridge_identity=parts.settings.bridge_identity).start()
    # no encoding of silence in a room left quiet, where a listener can tell us when the track is back
    speaker = SpeakerTrack(session, room, session.room_io.audio_output, idle=parts.settings.agent_track_idle)
    speaker.start()
    ctx.add_shutdown_callback(speaker.aclose)
    register_rpc(room, service, inbox)
    register_page_controls(room, session)


async def _another_worker_serves(room: rtc.Room) -> bool:
    """Two dispatches can race (a bridge retrying while a worker starts): the worker with the smallest identity
    keeps the room, so user turns are never split between two queues. The bridge prefers the same one."""
    me = room.local_participant.identity
    for worker in workers_in_serving_order(room.remote_participants.values()):
        identity = worker.identity
        if identity >= me:
            break
        try:
            await room.local_participant.perform_rpc(
                destination_identity=identity,
                method=RPC_PING,
                payload="{}",
                response_timeout=3.0,
                max_round_trip_latency=3.0,
            )
        except Exception:
            continue  # silent or gone: not serving
        logger.info("worker %s already serves room %s; leaving", identity, room.name)
        return True
    return False


def _label(label: Any, component: Any) -> str | None:
    try:
        return str(label(component))
    except Exception:
        return None


# --- the server ----------------------------------------------------------------------------------------------------


MAX_JOBS = 32
"""livekit marks the worker full at 70 % of this (22 rooms): about what two cores carry (docs/performance.md)."""


def job_load(server: AgentServer) -> float:
    """Load by rooms served, not CPU: speech models keep two cores busy, and shedding the one room we serve
    because of that would leave the user with nobody to talk to."""
    return min(len(server.active_jobs) / MAX_JOBS, 1.0)


def build_server(settings: Settings) -> AgentServer:
    # livekit's turn-detector v1-mini (~250 MB) goes unused here (our turn model is agent.speech.turn_model): do not
    # preload it into every worker; its native VAD, which we use (agent.speech.vad), loads in prewarm
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    # livekit's event-loop watchdog wakes every job process 40-100 times a second; set the variable to a
    # threshold in ms (livekit's default is 100) to diagnose a stalling loop
    os.environ.setdefault("LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", "0")
    server = AgentServer(
        job_executor_type=JobExecutorType(settings.job_executor),  # docs/performance.md: threads or processes
        load_fnc=job_load,
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        setup_fnc=prewarm,
        num_idle_processes=ServerEnvOption(  # one persistent room: one job; none where memory or cores are short
            dev_default=0, prod_default=idle_processes(os.cpu_count() or 1, available_memory_mb())
        ),
        initialize_process_timeout=180.0,  # loading the speech models on two busy cores takes a while
        port=ServerEnvOption(dev_default=0, prod_default=settings.worker_port),
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=accept)
    return server
