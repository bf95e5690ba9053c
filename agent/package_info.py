"""What voice-mcp is called on PyPI, its version, and the install command for an extra, in one place.

The distribution is `voice-mcp-bridge` (PyPI's `voice-mcp` is an unrelated, older project); the command it installs
is still `voice-mcp`. Hints that tell a user to install something name the distribution through `install_command`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

DISTRIBUTION = "voice-mcp-bridge"


def version() -> str:
    try:
        return _installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0"


def install_command(extra: str | None = None) -> str:
    """`pip install 'voice-mcp-bridge[extra]'`, and the equivalent from a clone of the repository."""
    target = f"'{DISTRIBUTION}[{extra}]'" if extra else DISTRIBUTION
    from_clone = "scripts/setup" if extra in (None, "offline") else f".venv/bin/pip install -e '.[{extra}]'"
    return f"pip install {target} (from a clone of the repository: {from_clone})"
