"""The page from `voice-mcp web` in a real browser: headless Debian Chromium opens a join link, its fake microphone
plays a spoken WAV into the room, the real worker hears it, and `converse` through the MCP server returns it as text.

Chromium is the system one (`/usr/bin/chromium`, installed by `scripts/setup --test`), driven by Playwright for
Python; nothing is downloaded. The screenshot lands in bench/out/web/ (kept by CI as an artifact). The last test puts a
stand-in worker (the Python SDK) in the room instead, to see the page acknowledge each of its audio tracks
(`voice-mcp.track-heard`).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import sys
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
from livekit import api, rtc
from mcp import Client, StdioServerParameters
from playwright.async_api import Browser, Page, Playwright, TimeoutError, async_playwright

from agent.protocol import ATTR_ROLE, TOPIC_TRACK_HEARD, TrackHeard
from agent.speech import PiperTTS
from tests.web.service import WebService, run_cli, service_env, start_web, stop

from .conftest import synthesize, wait_until
from .harness import REPO, ServerProcess, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "bench" / "out" / "web"
POLL_MS = 250
"""Page conditions are checked on a timer, not on animation frames (Playwright's default): once, the text was on the
page (in the failure screenshot) while a frame-polled wait timed out after 120 s."""
PHRASE = "Please run the full test suite first."
FAKE_RATE = 48000


def chromium_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def write_wav(path: Path, frame: rtc.AudioFrame, lead: float = 2.0, tail: float = 6.0) -> None:
    """The phrase between silences. Chromium loops the file, so the phone says it again every ~10 s: the test
    does not depend on when the track reaches the room, and a reconnect on a busy machine loses nothing."""
    resampler = rtc.AudioResampler(frame.sample_rate, FAKE_RATE, num_channels=1)
    frames = [*resampler.push(frame), *resampler.flush()]
    speech = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    samples = np.concatenate(
        [np.zeros(int(FAKE_RATE * lead), np.int16), speech, np.zeros(int(FAKE_RATE * tail), np.int16)]
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_RATE)
        out.writeframes(samples.tobytes())


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


def bridge(service: WebService) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_bridge"], env=service.env, cwd=str(service.data_dir)
    )


async def transcript(page: Page) -> str:
    return await page.inner_text("#transcript")


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup --test (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as instance:
        yield instance


@pytest.fixture
async def launch(
    playwright: Playwright, piper: PiperTTS, chromium: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Browser]]]:
    """A Chromium whose fake microphone says `phrase` (a browser cannot change its fake microphone file, so each
    device that must say something else is its own browser)."""
    launched: list[Browser] = []

    async def start(phrase: str, tail: float = 6.0) -> Browser:
        wav = tmp_path / f"phrase-{len(launched)}.wav"
        write_wav(wav, await synthesize(piper, phrase), tail=tail)
        launched.append(await playwright.chromium.launch(executable_path=chromium, args=chromium_args(wav)))
        return launched[-1]

    yield start
    for instance in launched:
        await instance.close()


@pytest.fixture
async def browser(launch: Callable[..., Awaitable[Browser]]) -> Browser:
    return await launch(PHRASE)


async def worker_in_room(server: ServerProcess, room: str) -> None:
    """Dispatch the worker to the room (as the bridge would) and wait until it is there, before the phone joins."""
    lkapi = api.LiveKitAPI(server.url, server.api_key, server.api_secret)
    try:
        await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="voice-mcp", room=room))

        async def present() -> bool:
            listing = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            return any(p.identity.startswith("voice-mcp-agent-") for p in listing.participants)

        for _ in range(600):  # up to 5 minutes: job processes start slowly on a busy machine
            if await present():
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"the worker never joined room {room}")
    finally:
        await lkapi.aclose()


async def open_link(browser: Browser, url: str, console: list[str]) -> Page:
    """A new device (its own cookies, so its own device identity) opens a join link and is in the room."""
    context = await browser.new_context(viewport={"width": 390, "height": 780})  # a phone-sized screen
    page = await context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    await page.goto(url)
    await page.wait_for_selector("#talk", state="visible", timeout=120_000)
    return page


async def wait_for_line(page: Page, classes: str, who: str, including: str = "", within_ms: float = 300_000) -> None:
    """Until the transcript has a line with these classes (".user.history"), label and (lower-case) words."""
    await page.wait_for_function(
        """([classes, who, including]) => [...document.querySelectorAll(`#transcript li${classes}`)].some((li) =>
             li.querySelector('.who').textContent === who && li.lastChild.textContent.length > 10 &&
             li.lastChild.textContent.toLowerCase().includes(including))""",
        arg=[classes, who, including],
        polling=POLL_MS,
        timeout=within_ms,
    )


async def converse_over_room(client: Client, message: str) -> tuple[dict[str, Any], set[str]]:
    """One `converse` through the room that must hear the user: its result, and every word it returned (the reply
    and any turns queued before the call)."""
    result = await client.call_tool("converse", {"message": message, "transport": "livekit", "listen_duration_max": 60})
    assert not result.is_error, result.content
    content = result.structured_content or {}
    assert content["transport"] == "livekit" and content["heard_speech"] is True, content
    return content, words(" ".join([*content.get("earlier", []), content["text"]]))


async def test_a_phone_joins_with_a_link_and_its_speech_answers_converse(
    lk_server: ServerProcess, lk_worker: WorkerProcess, lk_room: str, browser: Browser, tmp_path: Path
) -> None:
    env = service_env(tmp_path, lk_server.url, lk_server.api_key, lk_server.api_secret, lk_room)
    env["VOICE_MCP_LIVEKIT_TIMEOUT"] = "60"  # a browser, a worker and whisper share 2 busy cores: be patient
    process, service = await start_web(env, tmp_path)
    page: Page | None = None
    console: list[str] = []
    try:
        await worker_in_room(lk_server, lk_room)
        code, out, err = await run_cli(service, "link", "--json")
        assert code == 0, err
        url = json.loads(out)["url"]
        context = await browser.new_context(viewport={"width": 390, "height": 780})  # a phone-sized screen
        page = await context.new_page()
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        await page.goto(url)
        await page.wait_for_selector("#talk", state="visible", timeout=60_000)
        assert not await page.is_visible("#join")
        assert "#code" not in page.url and "code=" not in page.url  # the code left the address bar

        # the phone speaks as soon as its microphone is on; the worker transcribes it and the page shows it
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#transcript li.user')].some(li => li.innerText.length > 10)",
            polling=POLL_MS,
            timeout=300_000,
        )
        async with Client(bridge(service), read_timeout_seconds=300) as client:
            # said while no converse waited: kept, and returned by the next converse
            content, heard = await converse_over_room(client, "The refactoring is done. What should I do next?")
            # the relay's audio fidelity is limited today: most, not all, of the phrase must come through
            assert len(heard & words(PHRASE)) >= 3, content

            # the page shows the assistant's side too
            await page.wait_for_function(
                "() => document.querySelector('#transcript').innerText.includes('refactoring')",
                polling=POLL_MS,
                timeout=120_000,
            )

            # "Done talking" ends the turn through the worker's end_turn RPC
            await page.click("#done")
            await wait_until(lambda: "ended by user-" in lk_worker.output(), 60, "the worker to honour end_turn")

            # typed chat is the fallback: it reaches the next converse like speech
            await page.fill("#message", "Typed from the page instead")
            await page.click("#chat button[type=submit]")
            typed = await client.call_tool(
                "converse", {"message": "Anything else?", "transport": "livekit", "listen_duration_max": 30}
            )
            assert not typed.is_error, typed.content
            said = typed.structured_content or {}
            everything = " ".join([*said.get("earlier", []), said.get("text", "")])
            assert "typed from the page instead" in everything.lower(), said
        shown = await transcript(page)
        assert "Assistant" in shown and "You" in shown, shown
        assert len(words(shown) & words(PHRASE)) >= 3, shown
        state = await page.get_attribute("#state", "data-state")
        assert state in {"listening", "speaking", "thinking", "waiting"}, state

        shot = await screenshot(page, "page.png")
        assert shot.stat().st_size > 10_000

        # revoke-all signs the device out: it leaves the room at once and cannot come back without a new link
        code, _, err = await run_cli(service, "link", "--revoke-all")
        assert code == 0 and "removed from the room: user-" in err, err
        await page.wait_for_selector("#join", state="visible", timeout=60_000)
        assert not await page.is_visible("#talk")
        assert "session has ended" in await page.inner_text("#join-error")
        await context.close()
    except BaseException:
        if page is not None:  # what the page showed when it failed, for the CI artifact
            await screenshot(page, "page-failed.png")
            (ARTIFACTS / "page-failed-console.txt").write_text("\n".join(console))
        raise
    finally:
        await stop(process)


SECOND_PHRASE = "Deploy the release to staging tomorrow morning."
FIRST_MESSAGE = "The refactoring is done. What should I do next?"
SECOND_MESSAGE = "Which environment should I deploy to?"
QUEUED = "user turn queued (no converse call waiting)"  # the worker's log line


async def test_a_second_device_joins_mid_conversation_sees_the_history_and_answers(
    lk_server: ServerProcess,
    lk_worker: WorkerProcess,
    lk_room: str,
    launch: Callable[..., Awaitable[Browser]],
    tmp_path: Path,
) -> None:
    env = service_env(tmp_path, lk_server.url, lk_server.api_key, lk_server.api_secret, lk_room)
    env["VOICE_MCP_LIVEKIT_TIMEOUT"] = "60"
    process, service = await start_web(env, tmp_path)
    pages: dict[str, Page] = {}
    console: list[str] = []
    first_only = words(PHRASE) - words(SECOND_PHRASE)  # words only the first device says
    try:
        await worker_in_room(lk_server, lk_room)
        # the phone says its phrase, then 30 s of silence before the file loops: time to mute it after one turn
        phone_browser = await launch(PHRASE, tail=30.0)
        code, out, err = await run_cli(service, "link", "--json")
        assert code == 0, err
        pages["phone"] = phone = await open_link(phone_browser, json.loads(out)["url"], console)
        await wait_for_line(phone, ".user", "You")
        # its turn was heard (and queued for the next converse); the phone goes quiet so only the desktop speaks next
        await phone.click("#mute")
        assert await phone.get_attribute("#mute", "aria-pressed") == "true"

        async with Client(bridge(service), read_timeout_seconds=300) as client:
            content, heard = await converse_over_room(client, FIRST_MESSAGE)
            assert len(heard & words(PHRASE)) >= 3, content
            await wait_for_line(phone, ".assistant", "Assistant", "refactoring", 120_000)

            queued_before = lk_worker.output().count(QUEUED)
            # the desktop joins mid-conversation with its own link: its page shows what was said before it came
            desktop_browser = await launch(SECOND_PHRASE)
            code, out, err = await run_cli(service, "link", "--json")
            assert code == 0, err
            pages["desktop"] = desktop = await open_link(desktop_browser, json.loads(out)["url"], console)
            await wait_for_line(desktop, ".assistant.history", "Assistant", "refactoring", 120_000)
            await wait_for_line(desktop, ".user.history", "You (other device)", "", 60_000)
            past = await desktop.eval_on_selector_all("#transcript li.history", "lis => lis.map(li => li.innerText)")
            phone_turns = [text for text in past if text.startswith("You (other device)")]
            assert any(len(words(text) & words(PHRASE)) >= 3 for text in phone_turns), past
            shown = await transcript(desktop)
            assert shown.count("refactoring") == 1, shown  # one line per turn, however often the history came

            # the desktop speaks (its own line, labelled as this device's), and the next converse returns it; then
            # it goes quiet too, so the assistant's next message is not cut short by the looping fake microphone
            await wait_for_line(desktop, ".user", "You")
            await desktop.click("#mute")
            # its turn is complete (queued) before the call: the message is then spoken whole, not cut by the turn
            await wait_until(
                lambda: lk_worker.output().count(QUEUED) > queued_before, 120, "the desktop's turn to be queued"
            )
            content, heard = await converse_over_room(client, SECOND_MESSAGE)
            assert len(heard & words(SECOND_PHRASE)) >= 3, content
            assert not heard & first_only, content  # the muted phone was not heard again
            try:
                await wait_for_line(desktop, ".assistant", "Assistant", "environment", 120_000)
            except TimeoutError as exc:
                raise AssertionError(f"the assistant's message never showed on the desktop; {content}") from exc

        shot = await screenshot(desktop, "second-device.png")
        assert shot.stat().st_size > 10_000
    except BaseException:
        for name, page in pages.items():  # what each page showed when it failed, for the CI artifact
            await screenshot(page, f"{name}-failed.png")
        (ARTIFACTS / "second-device-failed-console.txt").write_text("\n".join(console))
        (ARTIFACTS / "second-device-failed-worker.log").write_text(lk_worker.output())
        raise
    finally:
        await stop(process)


# --- voice-mcp.track-heard: the page tells the worker when each of its tracks is heard ------------------------------

STANDIN_IDENTITY = "voice-mcp-agent-standin"
"""A worker's identity (`WORKER_IDENTITY_PREFIX`): the page acknowledges only workers' tracks."""
FRAME_MS = 20


class StandInSpeaker:
    """A participant in the worker's place: it publishes an audio track fed with silence in real time, replaces it
    with a new one on demand (as the worker does when it speaks after a quiet spell), and records every
    `TOPIC_TRACK_HEARD` packet and chat stream that reaches it (and wakes `wait_for` when anybody joins)."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.heard: list[tuple[str, str]] = []  # (track sid, sender identity), in arrival order
        self.chats: list[tuple[str, str]] = []  # (sender identity, text)
        self.changed = asyncio.Event()  # set on every packet, chat or participant that arrives
        self._feeder: asyncio.Task[None] | None = None
        self.track_sid = ""
        room.on("participant_connected", lambda _participant: self.changed.set())
        room.on("data_received", self._on_data)
        room.register_text_stream_handler("lk.chat", self._on_chat)

    @classmethod
    async def join(cls, server: ServerProcess, room_name: str) -> StandInSpeaker:
        grants = api.VideoGrants(room_join=True, room=room_name, can_publish=True, can_subscribe=True,
                                 can_publish_data=True)
        token = (
            api.AccessToken(server.api_key, server.api_secret)
            .with_identity(STANDIN_IDENTITY)
            .with_kind("agent")
            .with_attributes({ATTR_ROLE: "worker"})
            .with_grants(grants)
            .to_jwt()
        )
        room = rtc.Room()
        await room.connect(server.url, token)
        return cls(room)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC_TRACK_HEARD:
            return
        sender = packet.participant.identity if packet.participant else ""
        self.heard.append((TrackHeard.model_validate_json(packet.data).track_sid, sender))
        self.changed.set()

    def _on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            self.chats.append((sender, await reader.read_all()))
            self.changed.set()

        asyncio.get_running_loop().create_task(read())

    async def wait_for(self, what: str, done: Callable[[], bool], within: float = 120) -> None:
        """Until `done()`, re-checked whenever something arrives (generous: a browser shares 2 busy cores)."""
        try:
            async with asyncio.timeout(within):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except builtins.TimeoutError as exc:  # not Playwright's TimeoutError, which this module imports
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}; heard {self.heard}") from exc

    async def publish(self) -> str:
        """A new silent track in place of the current one (if any); its sid."""
        if self._feeder is not None:
            self._feeder.cancel()
            await self.room.local_participant.unpublish_track(self.track_sid)
        source = rtc.AudioSource(FAKE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("standin-voice", source)
        # no DTX: every silent frame goes out as a packet, as speech would
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False)
        publication = await self.room.local_participant.publish_track(track, options)
        self._feeder = asyncio.create_task(self._feed(source))
        self.track_sid = publication.sid
        return self.track_sid

    @staticmethod
    async def _feed(source: rtc.AudioSource) -> None:
        """Silence, one frame at a time: `capture_frame` waits while the source's buffer is full (real time)."""
        samples = FAKE_RATE * FRAME_MS // 1000
        frame = rtc.AudioFrame(bytes(samples * 2), FAKE_RATE, 1, samples)
        try:
            while True:
                await source.capture_frame(frame)
        finally:
            await source.aclose()

    async def leave(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
        await self.room.disconnect()


async def test_the_page_tells_the_worker_once_per_track_when_its_first_audio_arrives(
    lk_server: ServerProcess, lk_room: str, browser: Browser, tmp_path: Path
) -> None:
    env = service_env(tmp_path, lk_server.url, lk_server.api_key, lk_server.api_secret, lk_room)
    process, service = await start_web(env, tmp_path)
    standin = await StandInSpeaker.join(lk_server, lk_room)
    bystander = rtc.Room()  # another participant: the acknowledgements are the worker's business only
    bystander_heard: list[rtc.DataPacket] = []
    bystander.on("data_received", lambda p: bystander_heard.append(p) if p.topic == TOPIC_TRACK_HEARD else None)
    page: Page | None = None
    console: list[str] = []
    try:
        await bystander.connect(lk_server.url, lk_server.token("bystander", lk_room))
        first = await standin.publish()
        code, out, err = await run_cli(service, "link", "--json")
        assert code == 0, err
        page = await open_link(browser, json.loads(out)["url"], console)  # no real worker needed to join
        await standin.wait_for("the page to join", lambda: any(
            p.identity.startswith("user-") for p in standin.room.remote_participants.values()))
        device = next(p.identity for p in standin.room.remote_participants.values() if p.identity.startswith("user-"))

        await standin.wait_for("the first track's acknowledgement", lambda: bool(standin.heard))
        assert standin.heard == [(first, device)]

        # the worker takes its track away and speaks again on a new one: the page acknowledges the new track too
        second = await standin.publish()
        assert second != first
        await standin.wait_for("the second track's acknowledgement", lambda: len(standin.heard) >= 2)

        # a chat message from the page comes after everything it sent before on the same ordered reliable channel:
        # once it is here, any duplicate acknowledgement sent so far would be here too
        await page.fill("#message", "after the acknowledgements")
        await page.click("#chat button[type=submit]")
        await standin.wait_for("the page's chat message", lambda: bool(standin.chats))
        assert standin.chats == [(device, "after the acknowledgements")]
        assert standin.heard == [(first, device), (second, device)]  # each track once, in order, from the page
        assert bystander_heard == []
        assert not [line for line in console if "track-heard failed" in line], console
    except BaseException:
        if page is not None:
            await screenshot(page, "track-heard-failed.png")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "track-heard-failed-console.txt").write_text("\n".join(console))
        raise
    finally:
        await standin.leave()
        await bystander.disconnect()
        await stop(process)
