"""Join links: one home for what `create_join_link` (MCP) and `voice-mcp link` (CLI) hand out."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from agent.config import Settings

from .store import CODE_TTL_DEFAULT, AccessStore


@dataclass(frozen=True)
class JoinLink:
    url: str
    code: str
    expires_at: str  # ISO 8601, UTC

    def as_dict(self) -> dict[str, str]:
        return {"url": self.url, "code": self.code, "expires_at": self.expires_at}


def page_url(settings: Settings) -> str:
    return (settings.web_url or f"http://127.0.0.1:{settings.web_port}").rstrip("/") + "/"


def create_join_link(settings: Settings, ttl_seconds: float = CODE_TTL_DEFAULT) -> JoinLink:
    """A one-time code for the persistent room and the page address that carries it.

    The code travels in the URL fragment (`#code=`): browsers never send a fragment to a server, so it stays out
    of access logs, proxies and Referer headers; the page removes it from the address bar once read.
    """
    issued = AccessStore.in_data_dir(settings.data_dir).issue_code(ttl_seconds)
    expires = datetime.datetime.fromtimestamp(issued.expires_at, datetime.UTC).isoformat(timespec="seconds")
    return JoinLink(url=f"{page_url(settings)}#code={issued.code}", code=issued.code, expires_at=expires)
