"""Audio conversions shared by the speech providers: livekit frames <-> numpy, resampling, WAV parsing."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.utils import AudioBuffer

WHISPER_SAMPLE_RATE = 16000


def buffer_to_frame(buffer: AudioBuffer) -> rtc.AudioFrame:
    """One frame from a livekit `AudioBuffer` (a frame or a list of frames of one format)."""
    if isinstance(buffer, rtc.AudioFrame):
        return buffer
    return rtc.combine_audio_frames(list(buffer))


def frame_to_mono_int16(frame: rtc.AudioFrame) -> np.ndarray:
    """Interleaved int16 samples of `frame`, down-mixed to one channel."""
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return samples


def resample_int16(samples: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    """Resample mono int16 audio with livekit's own resampler (soxr)."""
    if input_rate == output_rate or samples.size == 0:
        return samples
    resampler = rtc.AudioResampler(input_rate, output_rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    frame = rtc.AudioFrame(
        data=samples.tobytes(), sample_rate=input_rate, num_channels=1, samples_per_channel=samples.size
    )
    out = [*resampler.push(frame), *resampler.flush()]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


def buffer_to_whisper_input(buffer: AudioBuffer) -> np.ndarray:
    """Float32 mono 16 kHz samples in [-1, 1], the input faster-whisper expects."""
    frame = buffer_to_frame(buffer)
    mono = resample_int16(frame_to_mono_int16(frame), frame.sample_rate, WHISPER_SAMPLE_RATE)
    return mono.astype(np.float32) / 32768.0


@dataclass
class WavFormat:
    sample_rate: int
    num_channels: int
    bits_per_sample: int


class WavStreamParser:
    """Incremental RIFF/WAVE parser: feed bytes as they arrive, get PCM bytes back.

    Streaming writers such as `espeak-ng --stdout` cannot know the data size in advance, so the size fields
    are ignored and everything after the `data` chunk header counts as PCM.
    """

    def __init__(self) -> None:
        self._pending = b""
        self.format: WavFormat | None = None
        self._in_data = False

    def feed(self, chunk: bytes) -> bytes:
        if self._in_data:
            return chunk
        self._pending += chunk
        buf = self._pending
        if len(buf) < 12:
            return b""
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise ValueError("not a RIFF/WAVE stream")
        pos = 12
        while len(buf) >= pos + 8:
            chunk_id = buf[pos : pos + 4]
            (size,) = struct.unpack("<I", buf[pos + 4 : pos + 8])
            if chunk_id == b"data":
                if self.format is None:
                    raise ValueError("WAV data chunk before fmt chunk")
                self._in_data = True
                self._pending = b""
                return buf[pos + 8 :]
            if len(buf) < pos + 8 + size:
                return b""  # wait for the rest of this chunk
            if chunk_id == b"fmt ":
                audio_format, channels, rate = struct.unpack("<HHI", buf[pos + 8 : pos + 16])
                (bits,) = struct.unpack("<H", buf[pos + 22 : pos + 24])
                if audio_format not in (1, 0xFFFE) or bits != 16:
                    raise ValueError(f"unsupported WAV encoding (format {audio_format}, {bits} bits)")
                self.format = WavFormat(sample_rate=rate, num_channels=channels, bits_per_sample=bits)
            pos += 8 + size + (size & 1)
        return b""
