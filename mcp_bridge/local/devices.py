"""Finding the microphone and the speaker (PortAudio, through sounddevice).

A device setting is a device index (`"3"`), a case-insensitive part of a device name (`"USB"`), or empty for the
system default. Every failure becomes an `AudioDeviceError` whose hint lists the devices that exist and names the
variable to set, so a user never sees a PortAudio traceback.

PortAudio lists devices once, when it is initialised. A headset plugged in later, or a sound server started after
us, is only seen after a rescan; `resolve_device` rescans once before giving up (never while a stream is open).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from mcp_bridge.converse_types import AudioDeviceError

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]

_VARIABLE = {"input": "VOICE_MCP_INPUT_DEVICE", "output": "VOICE_MCP_OUTPUT_DEVICE"}
_WHAT = {"input": "microphone", "output": "speaker"}

_open_streams = 0
_streams_lock = threading.Lock()
portaudio_lock = threading.RLock()
"""Held while a stream is opened and while PortAudio is re-initialised, so the two never overlap."""


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    kind: Kind
    default_samplerate: float
    channels: int

    def __str__(self) -> str:
        return f"#{self.index} {self.name!r}"


def sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into an `AudioDeviceError`."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioDeviceError(
            f"The audio library could not be loaded ({exc}).",
            "Install PortAudio (Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio).",
        ) from None
    return sd


def stream_opened() -> None:
    global _open_streams
    with _streams_lock:
        _open_streams += 1


def stream_closed() -> None:
    global _open_streams
    with _streams_lock:
        _open_streams = max(0, _open_streams - 1)


def rescan() -> bool:
    """Re-initialise PortAudio so it lists devices added since start-up. Skipped while a stream is open."""
    sd = sounddevice()
    with portaudio_lock, _streams_lock:
        if _open_streams:
            return False
        try:
            # sounddevice has no public re-scan; its maintainers point to this pair of calls for it
            # (PortAudio lists devices only when initialised). Revisit when sounddevice gains an API.
            sd._terminate()
            sd._initialize()
        except Exception as exc:  # PortAudio refuses when something else holds a stream; keep the old list
            log.debug("PortAudio rescan failed: %s", exc)
            return False
    return True


def list_devices(kind: Kind | None = None) -> list[Device]:
    sd = sounddevice()
    found: list[Device] = []
    try:
        infos = sd.query_devices()
    except Exception as exc:
        log.debug("query_devices failed: %s", exc)
        return found
    for info in infos:
        for k in ("input", "output"):
            channels = int(info[f"max_{k}_channels"])
            if channels > 0 and kind in (None, k):
                found.append(Device(int(info["index"]), str(info["name"]), k, float(info["default_samplerate"]),
                                    channels))
    return found


def describe_devices(kind: Kind) -> str:
    devices = list_devices(kind)
    if not devices:
        return f"No {_WHAT[kind]} is visible to PortAudio."
    return f"Available {_WHAT[kind]}s: " + ", ".join(str(d) for d in devices) + "."


NO_DEVICES_HINT = (
    "No audio device was found on this computer (no sound card, or no sound server running). "
    "Run `voice-mcp doctor` to see what is missing, or talk through a LiveKit room instead: set LIVEKIT_URL, "
    "LIVEKIT_API_KEY and LIVEKIT_API_SECRET and start the worker (README: Talking through LiveKit)."
)


def device_hint(kind: Kind) -> str:
    """What to do about a missing or failing device: pick another one, or (with none at all) where to go next."""
    if not list_devices(kind):
        return NO_DEVICES_HINT  # naming a device variable cannot help when there is nothing to name
    return (
        f"{describe_devices(kind)} Set {_VARIABLE[kind]} to a device index or part of its name "
        f"(or unset it for the system default)."
    )


def _find(setting: str | None, kind: Kind) -> Device | None:
    devices = list_devices(kind)
    if setting is None or not setting.strip():
        sd = sounddevice()
        try:
            default = sd.default.device[0 if kind == "input" else 1]
        except Exception:
            default = -1
        by_index = {d.index: d for d in devices}
        if isinstance(default, int) and default in by_index:
            return by_index[default]
        return None
    wanted = setting.strip()
    if wanted.lstrip("-").isdigit():
        return next((d for d in devices if d.index == int(wanted)), None)
    lowered = wanted.lower()
    exact = [d for d in devices if d.name.lower() == lowered]
    if exact:
        return exact[0]
    return next((d for d in devices if lowered in d.name.lower()), None)


def resolve_device(setting: str | None, kind: Kind, *, allow_rescan: bool = True) -> Device:
    """The device for `setting` (index, name part, or None for the default), or an `AudioDeviceError`.

    `allow_rescan=False` when another task may be opening a stream right now (PortAudio must not be
    re-initialised under it).
    """
    device = _find(setting, kind)
    if device is None and allow_rescan and rescan():
        device = _find(setting, kind)
    if device is not None:
        return device
    if setting is None or not setting.strip():
        raise AudioDeviceError(f"No {_WHAT[kind]} found (there is no default {kind} device).", device_hint(kind))
    raise AudioDeviceError(f"No {_WHAT[kind]} matches {_VARIABLE[kind]}={setting!r}.", device_hint(kind))


def open_failed(device: Device, exc: BaseException) -> AudioDeviceError:
    """The error for a device that exists but could not be opened."""
    return AudioDeviceError(
        f"The {_WHAT[device.kind]} {device} could not be opened ({exc}).",
        f"Check that it is connected and not held by another program. {device_hint(device.kind)}",
    )


def failed_in_use(device: Device, problem: str) -> AudioDeviceError:
    """The error for a device that stopped working while in use."""
    return AudioDeviceError(
        f"The {_WHAT[device.kind]} {device} stopped working: {problem}.",
        f"Check that it is still connected. {device_hint(device.kind)}",
    )


def choose_samplerate(device: Device, preferred: tuple[int, ...]) -> int:
    """The first rate of `preferred` the device accepts (PortAudio's check), else its own default rate.

    Rates are multiples of 100 so that 10 ms frames (what the echo canceller needs) are whole samples.
    """
    sd = sounddevice()
    check = sd.check_input_settings if device.kind == "input" else sd.check_output_settings
    for rate in preferred:
        try:
            check(device=device.index, channels=1, dtype="int16", samplerate=rate)
            return rate
        except Exception:
            continue
    rate = int(device.default_samplerate)
    if rate % 100:
        raise AudioDeviceError(
            f"The {_WHAT[device.kind]} {device} accepts none of the rates {preferred} Hz.",
            device_hint(device.kind),
        )
    return rate
