"""One-time access codes and the device sessions they open, kept hashed in a small SQLite file.

A code is what a join link carries: 80 random bits, shown once, stored only as its SHA-256, redeemable once,
before its TTL runs out. Redeeming it opens a device session: another random secret (kept by the browser in an
HttpOnly cookie, stored here hashed) with which the page fetches fresh room tokens without the code. The file
lives in the user data dir, so codes survive restarts of `voice-mcp web`; the bridge (MCP tool) and the CLI
write codes, the web service redeems them — several processes, hence a connection per operation and WAL mode.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CODE_TTL_DEFAULT = 600
CODE_TTL_MAX = 24 * 3600
SESSION_TTL = 12 * 3600
"""A device session ends 12 h after its link was redeemed: a stolen cookie is not a key for ever."""
MAX_OPEN_CODES = 100
MAX_SESSIONS = 50
CODE_BITS = 80

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (digest TEXT PRIMARY KEY, expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, device TEXT NOT NULL, expires_at REAL NOT NULL);
"""
_DEVICE = re.compile(r"^[a-z0-9]{8,32}$")

RedeemFailure = Literal["unknown", "used", "expired"]


class AccessError(ValueError):
    """A request the store refuses; `code` is the `[code]` a caller shows."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: float  # unix time


@dataclass(frozen=True)
class Session:
    secret: str  # goes to the browser once, in a cookie
    device: str
    expires_at: float


def normalise_code(code: str) -> str:
    """Codes are typed on phones: case, spaces and dashes do not matter."""
    return re.sub(r"[\s-]", "", code).upper()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_device_id() -> str:
    return secrets.token_hex(6)


def valid_device_id(device: str | None) -> bool:
    return bool(device and _DEVICE.match(device))


class AccessStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AccessStore:
        return cls(data_dir / "access.sqlite3")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            if new:
                os.chmod(self.path, 0o600)
                connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    # --- codes ---------------------------------------------------------------------------------------------------

    def issue_code(self, ttl_seconds: float = CODE_TTL_DEFAULT, *, now: float | None = None) -> IssuedCode:
        if not 1 <= ttl_seconds <= CODE_TTL_MAX:
            raise AccessError(
                "invalid_argument", f"ttl_seconds must be between 1 and {CODE_TTL_MAX} (24 h), got {ttl_seconds:g}"
            )
        now = time.time() if now is None else now
        raw = base64.b32encode(secrets.token_bytes(CODE_BITS // 8)).decode()  # 16 characters of A-Z2-7
        code = "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))
        with self._db() as db:
            db.execute("DELETE FROM codes WHERE expires_at <= ? OR used_at IS NOT NULL", (now,))
            (open_codes,) = db.execute("SELECT COUNT(*) FROM codes").fetchone()
            if open_codes >= MAX_OPEN_CODES:
                raise AccessError(
                    "too_many_codes",
                    f"{open_codes} unused join links are still open; wait for them to expire or run "
                    "`voice-mcp link --revoke-all`",
                )
            db.execute("INSERT INTO codes VALUES (?, ?, NULL)", (_digest(normalise_code(code)), now + ttl_seconds))
        return IssuedCode(code=code, expires_at=now + ttl_seconds)

    def redeem_code(self, code: str, *, now: float | None = None) -> RedeemFailure | None:
        """Mark the code used; None when that worked, else why not. A code works once."""
        now = time.time() if now is None else now
        digest = _digest(normalise_code(code))
        with self._db() as db:
            row = db.execute("SELECT expires_at, used_at FROM codes WHERE digest = ?", (digest,)).fetchone()
            if row is None:
                return "unknown"
            expires_at, used_at = row
            if used_at is not None:
                return "used"
            if expires_at <= now:
                return "expired"
            db.execute("UPDATE codes SET used_at = ? WHERE digest = ?", (now, digest))
        return None

    # --- device sessions -----------------------------------------------------------------------------------------

    def open_session(self, device: str, *, now: float | None = None) -> Session:
        if not valid_device_id(device):
            raise AccessError("invalid_argument", "device ids are 8-32 lowercase letters and digits")
        now = time.time() if now is None else now
        secret = secrets.token_urlsafe(32)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            # The oldest sessions make room: a bounded table, and the newest link always works.
            db.execute(
                "DELETE FROM sessions WHERE digest IN (SELECT digest FROM sessions ORDER BY expires_at DESC "
                "LIMIT -1 OFFSET ?)",
                (MAX_SESSIONS - 1,),
            )
            db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_digest(secret), device, now + SESSION_TTL))
        return Session(secret=secret, device=device, expires_at=now + SESSION_TTL)

    def session_device(self, secret: str, *, now: float | None = None) -> str | None:
        """The device a live session belongs to, or None (unknown, expired or revoked)."""
        now = time.time() if now is None else now
        with self._db() as db:
            row = db.execute(
                "SELECT device FROM sessions WHERE digest = ? AND expires_at > ?", (_digest(secret), now)
            ).fetchone()
        return row[0] if row else None

    def devices(self, *, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT device FROM sessions WHERE expires_at > ?", (now,))]

    def revoke_all(self) -> tuple[int, int]:
        """End every code and every device session; returns how many of each were still open."""
        now = time.time()
        with self._db() as db:
            codes = db.execute("SELECT COUNT(*) FROM codes WHERE used_at IS NULL AND expires_at > ?", (now,))
            (open_codes,) = codes.fetchone()
            (open_sessions,) = db.execute("SELECT COUNT(*) FROM sessions WHERE expires_at > ?", (now,)).fetchone()
            db.execute("DELETE FROM codes")
            db.execute("DELETE FROM sessions")
        return open_codes, open_sessions
