"""The local loop: microphone → echo cancellation → VAD → STT, and TTS → speaker, on this machine.

`LocalTransport` implements `mcp_bridge.transport_interface.Transport`;
`build_local_transport(settings, stt=, tts=, vad=)`
builds one with the shared speech providers. See docs/local-loop.md.
"""

from .factory import build_local_transport
from .transport import LocalTransport

__all__ = ["LocalTransport", "build_local_transport"]
