"""The PBX's logins, tokens and download randoms, with the device's rules.

* five failed logins (``lockout_threshold``) lock the caller's IP for ten minutes (``lockout_s``);
* a token dies after ``token_ttl`` seconds without traffic; an expired token answers errno
  20006 for a day, an unknown one 20004, a missing one 20005;
* a random is bound to its target, its token and the caller's IP (plus one ``allowedip``),
  dies after ``random_ttl`` seconds, and a spent / expired / foreign random gives
  ``{"status": "Failed"}`` with no errno at all.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["PbxFailure", "PbxSessions", "SessionRules", "Token"]

JsonDict = dict[str, Any]


class PbxFailure(Exception):
    """Answers HTTP 200 ``{"status":"Failed"[, "errno"]}``; ``counter`` names what it counts as."""

    def __init__(self, errno: str | None, counter: str | None = None) -> None:
        super().__init__(errno or "Failed")
        self.errno = errno
        self.counter = counter

    def body(self) -> JsonDict:
        """The reply body."""
        out: JsonDict = {"status": "Failed"}
        if self.errno is not None:
            out["errno"] = self.errno
        return out


@dataclass
class Token:
    """A logged-in session."""

    value: str
    ip: str
    last_seen: float
    report_url: str | None
    issued: float


@dataclass
class _Random:
    value: str
    kind: str  # "recording" | "cdr"
    target: tuple[str, ...]  # (recording,) or (extid, starttime, endtime)
    token: str
    allowed: frozenset[str]
    expires_at: float
    used: bool = False


class SessionRules(Protocol):
    """The limits the sessions follow (read at every use, so a test may change them)."""

    token_ttl: float
    random_ttl: float
    lockout_threshold: int
    lockout_s: float


class PbxSessions:
    """Logins, tokens and randoms; thread-safe.  Token failures are counted as ``token_errors``."""

    def __init__(self, rules: SessionRules, count: Callable[[str], None]) -> None:
        self._rules = rules
        self._count = count
        self._lock = threading.RLock()
        self._tokens: dict[str, Token] = {}
        self._expired_tokens: dict[str, float] = {}  # token -> when it expired
        self._failed_logins: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._randoms: dict[str, _Random] = {}

    # ------------------------------------------------------------------ logins and tokens

    def check_not_locked(self, ip: str, now: float) -> None:
        """errno 20002 while ``ip`` is locked out; a lockout that has run out is forgotten."""
        with self._lock:
            until = self._locked_until.get(ip)
            if until is not None and now < until:
                raise PbxFailure("20002", "logins_locked")
            if until is not None:
                del self._locked_until[ip]

    def log_in(self, ip: str, credentials_ok: bool, report_url: str | None, now: float) -> str:
        """A new token; errno 20003 (and one more strike against ``ip``) for bad credentials."""
        with self._lock:
            if not credentials_ok:
                fails = self._failed_logins.get(ip, 0) + 1
                if fails >= self._rules.lockout_threshold:
                    self._failed_logins.pop(ip, None)
                    self._locked_until[ip] = now + self._rules.lockout_s
                else:
                    self._failed_logins[ip] = fails
                raise PbxFailure("20003", "logins_failed")
            self._failed_logins.pop(ip, None)
            value = secrets.token_hex(16)
            self._tokens[value] = Token(value, ip, now, report_url, now)
            return value

    def log_out(self, token: Token) -> None:
        """End the session of ``token``."""
        with self._lock:
            self._tokens.pop(token.value, None)

    def authenticate(self, value: str, now: float, force_expiry: Callable[[], bool]) -> Token:
        """The live token ``value``, kept alive by this use; errno 20005 / 20004 / 20006 otherwise.

        ``force_expiry`` is asked once the token is found alive: True makes it expire now.
        """
        with self._lock:
            if not value:
                self._count("token_errors")
                raise PbxFailure("20005")
            self._sweep(now)
            tok = self._tokens.get(value)
            if tok is None:
                self._count("token_errors")
                raise PbxFailure("20006" if value in self._expired_tokens else "20004")
            if force_expiry():
                self._expire_token(value, now)
                self._count("token_errors")
                raise PbxFailure("20006")
            tok.last_seen = now  # any authenticated traffic keeps the token alive
            return tok

    def expire_all(self, now: float) -> None:
        """Make every live token expired."""
        with self._lock:
            for value in list(self._tokens):
                self._expire_token(value, now)

    def live_tokens(self, now: float) -> list[str]:
        """Tokens alive at ``now``."""
        with self._lock:
            self._sweep(now)
            return list(self._tokens)

    def live_report_urls(self, now: float) -> list[str]:
        """Report URLs of the live tokens that registered one, oldest login first."""
        with self._lock:
            self._sweep(now)
            live = sorted(self._tokens.values(), key=lambda t: t.issued)
            return [t.report_url for t in live if t.report_url]

    # ------------------------------------------------------------------ randoms

    def issue_random(
        self, kind: str, target: tuple[str, ...], tok: Token, allowedip: str, now: float, *, expired: bool = False
    ) -> str:
        """A random for one download of ``target``; ``expired`` issues it already expired."""
        value = secrets.token_hex(16)
        expires = now - 1.0 if expired else now + self._rules.random_ttl
        allowed = {tok.ip} | ({allowedip} if allowedip else set())
        with self._lock:
            self._randoms[value] = _Random(value, kind, target, tok.value, frozenset(allowed), expires)
        return value

    def spend_random(
        self, value: str, kind: str, target: tuple[str, ...], tok: Token, ip: str, now: float, *, single_use: bool
    ) -> None:
        """Validate a random for this download and mark it used; ``PbxFailure(None)`` otherwise."""
        with self._lock:
            rnd = self._randoms.get(value)
            if (
                rnd is None
                or rnd.kind != kind
                or rnd.target != target
                or rnd.token != tok.value
                or rnd.used
                or now > rnd.expires_at
                or ip not in rnd.allowed
            ):
                raise PbxFailure(None)
            if single_use:
                rnd.used = True

    # ------------------------------------------------------------------ expiry

    def _expire_token(self, value: str, now: float) -> None:
        if self._tokens.pop(value, None) is not None:
            self._expired_tokens[value] = now

    def _sweep(self, now: float) -> None:
        ttl = self._rules.token_ttl
        for value, tok in list(self._tokens.items()):
            if now - tok.last_seen > ttl:
                self._expire_token(value, tok.last_seen + ttl)
        # Remember expired tokens for a day so 20006 can be told apart from 20004.
        for value, when in list(self._expired_tokens.items()):
            if now - when > 86400:
                del self._expired_tokens[value]
        for value, rnd in list(self._randoms.items()):
            if now - rnd.expires_at > 3600:
                del self._randoms[value]
