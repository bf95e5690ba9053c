"""A small LiveKit-protocol server for integration tests (see docs/testing-livekit.md)."""
