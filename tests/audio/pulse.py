"""A private PulseAudio server with a virtual microphone and speaker, for tests on machines without a sound card.

Register with `pytest_plugins = ["tests.audio.pulse"]` and use the session fixture `virtual_audio`:

- `virtual_audio.env`: the environment variables a subprocess needs to use this server (merge into `os.environ`);
  the test process itself gets them for the whole session.
- `virtual_audio.play_into_mic(wav_path | pcm_bytes | int16 array, rate=16000)`: what the microphone hears
  (`paplay -d micsink`; the default source `vmic` is its monitor). Blocks until played; `wait=False` returns
  the `Popen`.
- `with virtual_audio.record_speaker() as rec: ...; pcm = rec.samples()`: int16 mono 16 kHz of what was played to
  the default sink `vspeaker` (`parec -d vspeaker.monitor`); `rec.samples()` works while recording, too.
- `virtual_audio.refresh_portaudio()`: make an already-imported sounddevice see the server's devices.

Devices: sink `vspeaker` (default output), sink `micsink`, source `vmic` (default input, remapped from
`micsink.monitor`). With sounddevice/PortAudio, use the ALSA devices `pulse` or `default`.

If `pulseaudio` is not installed the fixture skips (with the apt-get line to install it), or fails when `CI=true`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import pytest

APT_PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins alsa-utils libportaudio2"
RATE = 16000

_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=vspeaker rate=16000 channels=1
load-module module-null-sink sink_name=micsink rate=16000 channels=1
load-module module-remap-source master=micsink.monitor source_name=vmic
set-default-sink vspeaker
set-default-source vmic
"""


class SpeakerRecorder:
    """`parec` of the virtual speaker's monitor into a temporary file (int16 mono 16 kHz)."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        fd, name = tempfile.mkstemp(suffix=".pcm", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self._out = self.path.open("wb")
        self._proc = subprocess.Popen(
            ["parec", "-d", "vspeaker.monitor", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1",
             "--latency-msec=20"],
            stdout=self._out, stderr=subprocess.DEVNULL, env=env,
        )
        self.sample_rate = RATE

    def samples(self) -> np.ndarray:
        """Everything captured so far."""
        if not self._out.closed:
            self._out.flush()
        data = self.path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).copy()

    def wait_for_sound(self, timeout: float, level: int = 300) -> bool:
        """Until something louder than `level` (int16 peak) has been captured, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = self.samples()
            if samples.size and int(np.abs(samples.astype(np.int32)).max()) > level:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> np.ndarray:
        """Stop recording (idempotent) and return everything captured."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if not self._out.closed:
            self._out.close()
        return self.samples()

    def __enter__(self) -> SpeakerRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class VirtualAudio:
    runtime_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    """Variables for a subprocess: XDG_RUNTIME_DIR and PULSE_SERVER of this private server."""
    speaker_sink: str = "vspeaker"
    mic_sink: str = "micsink"
    mic_source: str = "vmic"
    sample_rate: int = RATE

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.full_env(), capture_output=True, text=True,
                              timeout=15, check=True).stdout

    def play_into_mic(
        self, audio: str | Path | bytes | np.ndarray, rate: int = RATE, *, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Play a WAV file, or raw int16 mono PCM at `rate`, into the virtual microphone."""
        if isinstance(audio, str | Path):
            cmd = ["paplay", "-d", self.mic_sink, str(audio)]
            data = None
        else:
            pcm = audio.astype(np.int16).tobytes() if isinstance(audio, np.ndarray) else audio
            cmd = ["paplay", "-d", self.mic_sink, "--raw", "--format=s16le", f"--rate={rate}", "--channels=1"]
            data = pcm
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=self.full_env())
        if data is not None:
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.close()
        if wait:
            proc.wait(timeout=120)
            if proc.returncode:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"paplay failed ({proc.returncode}): {err}")
        return proc

    @contextlib.contextmanager
    def echo_path(self, gain: float = 0.3, latency_msec: int = 60) -> Iterator[None]:
        """Route the speaker into the microphone (like laptop speakers next to their microphone) while inside.

        `gain` is the linear amplitude factor of the echo (PulseAudio volumes are cubic, hence the conversion).
        """
        volume_percent = round(100 * gain ** (1 / 3))
        module = self.pactl("load-module", "module-loopback", "source=vspeaker.monitor", "sink=micsink",
                            f"latency_msec={latency_msec}", "source_dont_move=true", "sink_dont_move=true").strip()
        try:
            for block in self.pactl("list", "sink-inputs").split("Sink Input #")[1:]:
                if f"Owner Module: {module}" in block:
                    self.pactl("set-sink-input-volume", block.split()[0], f"{volume_percent}%")
            yield
        finally:
            self.pactl("unload-module", module)

    def record_speaker(self) -> SpeakerRecorder:
        return SpeakerRecorder(self.full_env(), self.runtime_dir)

    def refresh_portaudio(self) -> None:
        """PortAudio lists devices when initialised: re-initialise an imported sounddevice to see ours."""
        sd = sys.modules.get("sounddevice")
        if sd is not None:
            sd._terminate()
            sd._initialize()


def _missing(what: str) -> None:
    message = (f"{what}: the virtual audio devices need PulseAudio. Install with: "
               f"apt-get install --no-install-recommends {APT_PACKAGES}")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def start_virtual_audio(runtime_dir: Path) -> VirtualAudio:
    runtime_dir.chmod(0o700)
    config = runtime_dir / "virtual.pa"
    config.write_text(_CONFIG)
    log = runtime_dir / "pulseaudio.log"
    env = {"XDG_RUNTIME_DIR": str(runtime_dir), "PULSE_SERVER": f"unix:{runtime_dir}/pulse/native"}
    full = {**os.environ, **env}
    full.pop("PULSE_SERVER")  # the daemon itself must not try to connect anywhere
    subprocess.run(
        ["pulseaudio", "-n", "-F", str(config), "--exit-idle-time=-1", "--daemonize=yes",
         f"--log-target=file:{log}"],
        env=full, check=True, timeout=30, capture_output=True,
    )
    audio = VirtualAudio(runtime_dir=runtime_dir, env=env)
    deadline = time.monotonic() + 20
    while True:
        try:
            audio.pactl("info")
            return audio
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not come up; see {log}:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def stop_virtual_audio(audio: VirtualAudio) -> None:
    pid_file = audio.runtime_dir / "pulse" / "pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def virtual_audio() -> Iterator[VirtualAudio]:
    """A private PulseAudio server with a virtual microphone and speaker, running for the test session."""
    for tool in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(tool) is None:
            _missing(f"{tool} not found")
    # short path: the unix socket path must stay under ~100 characters
    runtime_dir = Path(tempfile.mkdtemp(prefix="vmcp-pulse-"))
    audio = start_virtual_audio(runtime_dir)
    saved = {key: os.environ.get(key) for key in audio.env}
    os.environ.update(audio.env)
    audio.refresh_portaudio()
    try:
        yield audio
    finally:
        stop_virtual_audio(audio)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        audio.refresh_portaudio()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Helper: int16 mono samples → WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int16).tobytes())
    return path
