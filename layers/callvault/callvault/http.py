"""The one HTTP client setup: a requests session per source, with its TLS settings.

Sessions are kept per container so repeated calls to a provider reuse connections.
Every call passes an explicit timeout (requests has no session-wide default). No session
follows a redirect: a 3xx comes back to the caller, which refuses it (``refuse_redirect``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from callvault.errors import PermanentFailure, RetryKind, RetryLater

if TYPE_CHECKING:
    # Imported where a request is made: the webhook imports every provider module (to parse
    # sources) and never calls a provider, so its cold start does without requests.
    import requests

# Seconds to connect; reads default to DEFAULT_READ_TIMEOUT (sources may change it): a
# stalled download must not hold a fetcher until its Lambda timeout.
CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
USER_AGENT = "callvault/1.0"


@dataclass(frozen=True)
class TlsSettings:
    """How to check a provider's certificate: the system store, a CA bundle, or an explicit opt-out."""

    verify: bool = True
    ca_bundle_pem: str | None = None

    def requests_verify(self) -> bool | str:
        if not self.verify:
            return False
        if self.ca_bundle_pem:
            return _ca_bundle_file(self.ca_bundle_pem)
        return True


SYSTEM_TLS = TlsSettings()


def _ca_bundle_file(pem: str) -> str:
    # requests wants a path; the bundle comes from the source secret, so write it once per
    # container under a content-addressed name (a certificate is public, not a secret).
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "callvault-ca" / f"{digest}.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pem, encoding="ascii")
    return str(path)


@cache
def _session_class() -> type[requests.Session]:
    """``RedirectRefusingSession``, defined at the first session (it needs requests)."""
    import requests

    class RedirectRefusingSession(requests.Session):
        """A session that never follows a redirect, whatever a call's ``allow_redirects`` says.

        Following one would re-send a request's query (PBX token, single-use random) and, on a
        307/308, its body (PBX username and password hash, the webhook token of the login's report
        URL) to wherever ``Location`` points, and would archive that place's answer as a recording
        past every check made on the address the source configured.
        """

        def get_redirect_target(self, resp: requests.Response) -> str | None:
            return None

    return RedirectRefusingSession


class HttpClients:
    """Hands out one ``RedirectRefusingSession`` per (source, TLS settings)."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, TlsSettings], requests.Session] = {}

    def session(self, source_id: str, tls: TlsSettings = SYSTEM_TLS) -> requests.Session:
        key = (source_id, tls)
        session = self._sessions.get(key)
        if session is None:
            session = _session_class()()
            session.verify = tls.requests_verify()
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = False  # proxies from the environment must not see credentials
            self._sessions[key] = session
        return session


def range_header(offset: int) -> dict[str, str]:
    """The request header that asks for a file from byte ``offset`` on (none for the whole file)."""
    return {"Range": f"bytes={offset}-"} if offset > 0 else {}


class ResponseStream:
    """A streamed ``requests`` response as a ``DownloadStream``; closes the connection on exit.

    A 200 is the whole file; a 206 is the part its ``Content-Range`` names, which must run to the
    end of a file of known size (``bytes=N-`` is the only range callvault asks for) and agree with
    ``Content-Length``: a 206 that does not is refused here (retryable), as nothing could resume on it.
    """

    def __init__(self, response: requests.Response, what: str = "download") -> None:
        self._response = response
        length = response.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else None
        self.content_type = response.headers.get("Content-Type")
        self.start = 0
        self.total_size = self.content_length
        if response.status_code == 206:
            header = response.headers.get("Content-Range", "")
            span = _content_range(header)
            if span is None or (self.content_length is not None and self.content_length != span[1] - span[0] + 1):
                response.close()
                raise RetryLater(
                    RetryKind.TRANSFER_FAILED,
                    f"{what} answered 206 with a Content-Range that is not the rest of the file ({header[:60]!r})",
                )
            self.start, self.total_size = span[0], span[2]

    def chunks(self, size: int) -> Iterator[bytes]:
        yield from self._response.iter_content(chunk_size=size)

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._response.close()


_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")


def _content_range(header: str) -> tuple[int, int, int] | None:
    """(first, last, total) of a ``Content-Range`` that reaches the end of its file, else None."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last, total = (int(group) for group in match.groups())
    return (first, last, total) if first <= last == total - 1 else None


def unreachable(what: str, exc: requests.RequestException) -> RetryLater:
    """A transport failure as a retryable error whose reason tells ops what to look at."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return RetryLater(
            RetryKind.PROVIDER_UNAVAILABLE,
            f"{what}: TLS certificate not trusted (give the source a ca_bundle, or tls_verify: false)",
        )
    if isinstance(exc, requests.Timeout):
        return RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"{what}: timed out")
    return RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"{what}: unreachable ({type(exc).__name__})")


def refuse_redirect(what: str, response: requests.Response, *, hint: str) -> None:
    """A 3xx reply as a permanent failure naming where it pointed; the response is closed.

    Only the target's host goes into the reason (it reaches the ledger and the logs): the rest
    of a ``Location`` may carry the very token or random the redirect would have leaked.
    """
    status = response.status_code
    if not 300 <= status < 400:
        return
    response.close()
    target = _redirect_host(response)
    raise PermanentFailure(f"{what} answered {status} redirect to {target}; redirects are refused ({hint})")


def _redirect_host(response: requests.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        return "nowhere (no Location header)"
    try:
        host = urlsplit(urljoin(response.url, location)).hostname
    except ValueError:
        host = None
    if not host:
        return "an unreadable Location"
    return repr(host[:100])


def redact_url(url: str) -> str:
    """A download URL without its query: safe to log (the query holds the signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
