"""The end-of-turn model: is the user done talking, judged from how their speech sounds (Smart Turn v3.2).

Smart Turn v3.2 (pipecat-ai/smart-turn, BSD-2-Clause) is an 8.7 MB ONNX audio classifier: it hears the last (up
to) 8 s of a turn — words, intonation, a trailing "um" — and gives the probability that the speaker has finished.
It runs on the CPU in a few tens of milliseconds. Nothing is downloaded at run time: the file is looked up, in
this order, at

1. `VOICE_MCP_TURN_MODEL` (a path to the `.onnx` file), when set;
2. `agent/speech/data/smart-turn-v3.2-cpu.onnx` beside this module, where `scripts/fetch-turn-model` (run by
   `scripts/setup`) extracts it from the pinned `pipecat-ai` wheel on PyPI and checks its SHA-256;
3. inside an installed `pipecat-ai` package, which ships the same file.

Use (both the local loop and the LiveKit worker):

```python
model = await TurnModel.load()              # or TurnModel.load(path); raises TurnModelUnavailable (with a fix)
p = await model.end_of_turn_probability(audio_16k)   # int16 or float32 mono at 16 kHz: the turn so far,
done = p >= model.threshold                          #   from its onset to now (trailing silence included)
await model.aclose()
```

`end_of_turn_probability` runs the model on the model's own thread (never on the event loop); overlapping calls
queue. Loading costs about 0.2 s, once per process (later loads share the ONNX session); one decision about
30–60 ms of one core. Input preparation follows the model's training: the last 8 s, zero-padded at the front,
normalised to zero mean and unit variance, then Whisper's 80-bin log-mel spectrogram (faster-whisper's
`FeatureExtractor`, 800 frames).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProviderUnavailable
from .model_weights import cached

log = logging.getLogger(__name__)

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
DATA_DIR = Path(__file__).with_name("data")
SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
DEFAULT_THRESHOLD = 0.5
FETCH_FIX = "run scripts/fetch-turn-model (scripts/setup does), or set VOICE_MCP_TURN_MODEL to the .onnx file"


class TurnModelUnavailable(ProviderUnavailable):
    """The end-of-turn model cannot be found or loaded; `.fix` says what to do."""

    def __init__(self, problem: str, fix: str = FETCH_FIX) -> None:
        super().__init__("smart-turn", problem, fix)


def find_model(path: str | Path | None = None) -> Path:
    """The model file: `path` if given, else the first of the places in the module docstring that has it."""
    if path:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise TurnModelUnavailable(f"VOICE_MCP_TURN_MODEL={path} is not a file")
        return candidate
    candidates = [DATA_DIR / MODEL_FILE]
    spec = importlib.util.find_spec("pipecat")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates.append(Path(root) / "audio" / "turn" / "smart_turn" / "data" / MODEL_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TurnModelUnavailable(f"the Smart Turn model {MODEL_FILE} is not installed")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TurnModel:
    """One loaded Smart Turn session. Build with `await TurnModel.load()`; close with `aclose()`."""

    def __init__(self, session: Any, path: Path, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._session: Any | None = session
        self._input = session.get_inputs()[0].name
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_SECONDS)
        # one thread of its own: decisions run one at a time (a CPU core's worth, shared with STT and TTS), and
        # aclose() can wait for the one in progress, which a cancelled asyncio.to_thread call would not allow
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voice-mcp-turn-model")
        self.path = path
        self.threshold = threshold

    @classmethod
    def load_sync(cls, path: str | Path | None = None, *, threshold: float = DEFAULT_THRESHOLD) -> TurnModel:
        """A model on its own decision thread. The ONNX session behind it is loaded (and warmed) once per
        process and shared: onnxruntime runs one session from several threads, and a worker serving its rooms
        as threads (`VOICE_MCP_JOB_EXECUTOR=thread`) would otherwise hold one copy per room."""
        found = find_model(path)
        return cls(cached(("smart-turn", str(found)), lambda: _load_session(found)), found, threshold=threshold)

    @classmethod
    async def load(cls, path: str | Path | None = None, *, threshold: float = DEFAULT_THRESHOLD) -> TurnModel:
        """Find and load the model on a worker thread. Raises `TurnModelUnavailable`."""
        return await asyncio.to_thread(cls.load_sync, path, threshold=threshold)

    def features(self, audio_16k: np.ndarray) -> np.ndarray:
        """(1, 80, 800) float32 model input for the turn audio (see the module docstring)."""
        audio = np.asarray(audio_16k)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        audio = audio.astype(np.float32).reshape(-1)
        window = SAMPLE_RATE * WINDOW_SECONDS
        if audio.size >= window:
            audio = audio[-window:]
        else:
            audio = np.concatenate([np.zeros(window - audio.size, dtype=np.float32), audio])
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        mel = self._features(audio, padding=0)
        return np.ascontiguousarray(mel[np.newaxis, :, : window // 160], dtype=np.float32)

    def probability_sync(self, audio_16k: np.ndarray) -> float:
        session = self._session
        if session is None:
            raise RuntimeError("the end-of-turn model is closed")
        outputs = session.run(None, {self._input: self.features(audio_16k)})
        return float(np.asarray(outputs[0]).reshape(-1)[0])

    async def end_of_turn_probability(self, audio_16k: np.ndarray) -> float:
        """Probability (0–1) that the speaker has finished, for the turn's audio so far (16 kHz mono)."""
        if self._session is None:
            raise RuntimeError("the end-of-turn model is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.probability_sync, audio_16k)

    async def aclose(self) -> None:
        """Wait for the decision in progress (a model run cannot be interrupted), then release the session."""
        if self._session is None:
            return
        self._session = None
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


def _load_session(found: Path) -> Any:
    """The ONNX session for the model file, after one run: the first run of a session is several times slower;
    pay it now, not on the user's first pause. Raises `TurnModelUnavailable`."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one decision at a time per caller, on a CPU shared with STT and TTS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(found), sess_options=options, providers=["CPUExecutionProvider"])
    except ImportError:
        raise TurnModelUnavailable(
            "onnxruntime is not installed", "pip install voice-mcp (faster-whisper brings onnxruntime)"
        ) from None
    except Exception as exc:
        raise TurnModelUnavailable(f"{found} could not be loaded ({exc})", f"reinstall it: {FETCH_FIX}") from exc
    log.debug("end-of-turn model loaded from %s", found)
    warm = TurnModel(session, found)
    try:
        warm.probability_sync(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))
    except Exception as exc:
        log.debug("end-of-turn model warm-up failed: %s", exc)  # a broken model shows on its first decision
    finally:
        warm._executor.shutdown(wait=False)
    return session
