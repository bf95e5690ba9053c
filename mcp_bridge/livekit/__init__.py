"""The LiveKit transport: converse through a voice-mcp worker in a persistent LiveKit room."""

from .tokens import TokenSource
from .transport import LiveKitTransport
from .workers import WorkerHandle

__all__ = ["LiveKitTransport", "TokenSource", "WorkerHandle"]
