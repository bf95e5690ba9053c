"""The one error type of our own. Failures while serving a request stay livekit's `APIError` family.

- `ProviderUnavailable`: a provider cannot be built at all (bundled model package missing, `espeak-ng` not
  installed, no API key). Raised by constructors and by `build_stt`/`build_tts` when no configured provider
  is left; carries a fix hint.
- While serving, providers raise `livekit.agents.APIConnectionError` / `APIStatusError` / `APITimeoutError`.
  A `FallbackAdapter` whose providers all failed raises `APIConnectionError("all STTs failed ...")`. These are
  passed through unchanged so callers can tell a dead provider from a bug.
"""

from __future__ import annotations


class ProviderUnavailable(RuntimeError):
    """A speech provider cannot be used. `fix` says what to do about it."""

    def __init__(self, provider: str, problem: str, fix: str) -> None:
        self.provider = provider
        self.problem = problem
        self.fix = fix
        super().__init__(f"{provider}: {problem}. Fix: {fix}")
