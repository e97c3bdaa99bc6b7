"""Downloading a provider-signed object-storage URL (Alibaba OSS links from CCC and Dypls).

The link is a bearer credential: it is checked against the source's allowed hosts (SSRF
guard, ``callvault.download_hosts``), never logged whole, opened only right before streaming,
and a redirect from it is refused. OSS answers an expired link with HTTP 403 and an XML error
whose Code is AccessDenied ("Request has expired").

A broken transfer resumes with ``Range: bytes=N-``: OSS answers a valid range with 206 and
``Content-Range``, and ignores an invalid or out-of-range one (200, the whole object) unless the
request carries ``x-oss-range-behavior: standard``. That header cannot be sent here: a V1 signed
URL's signature covers every ``x-oss-*`` header, and Alibaba signed the link without it. So a
range OSS did not honour comes back as the whole file, which the transfer restarts on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from callvault.download_hosts import DownloadHosts
from callvault.errors import RetryKind, RetryLater
from callvault.http import CONNECT_TIMEOUT, ResponseStream, range_header, redact_url, refuse_redirect, unreachable

if TYPE_CHECKING:
    # Imported where a request is made (see callvault.http): the webhook imports this module
    # to parse sources and events, and never calls a provider.
    import requests

MAX_ERROR_BODY = 16 * 1024
XML_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


@contextmanager
def open_signed_url(
    http: requests.Session, url: str, *, hosts: DownloadHosts, read_timeout: float, offset: int = 0
) -> Iterator[ResponseStream]:
    """Open ``url`` for streaming from byte ``offset``; a link the source does not allow, or a
    redirect, is a permanent failure, other failures are retryable; every reason is readable."""
    import requests

    hosts.check(url)
    url = _over_tls(url)
    where = redact_url(url)
    try:
        # No redirects (HttpClients' sessions follow none either): one could lead past the host check.
        response = http.get(
            url,
            stream=True,
            timeout=(CONNECT_TIMEOUT, read_timeout),
            allow_redirects=False,
            headers=range_header(offset),
        )
    except requests.RequestException as exc:
        raise unreachable(f"download from {where}", exc) from None
    refuse_redirect(f"download from {where}", response, hint="a signed link must serve the file itself")
    if response.status_code not in (200, 206):
        status = response.status_code
        try:
            code = _error_code(response.raw.read(MAX_ERROR_BODY, decode_content=True))
        finally:
            response.close()
        raise _failure(status, code, where)
    with ResponseStream(response, f"download from {where}") as stream:
        yield stream


def _over_tls(url: str) -> str:
    """Alibaba hands out http:// OSS links; their signature does not cover the scheme, so fetch
    them over https and keep the link and the recording off the wire in clear."""
    parts = urlsplit(url)
    if parts.scheme == "http" and (parts.hostname or "").endswith(".aliyuncs.com"):
        return urlunsplit(parts._replace(scheme="https"))
    return url


def _error_code(body: bytes) -> str:
    match = XML_CODE.search(body)
    return match.group(1).decode("utf-8", "replace") if match else ""


def _failure(status: int, code: str, where: str) -> RetryLater:
    detail = f"HTTP {status}{f' {code}' if code else ''} from {where}"
    if status == 403:
        # Expired (AccessDenied) or otherwise refused: the next attempt asks for a fresh link.
        return RetryLater(RetryKind.LINK_EXPIRED, f"download link refused: {detail}")
    if status == 404:
        return RetryLater(RetryKind.NOT_READY, f"recording file not in storage yet: {detail}")
    if status == 416:
        return RetryLater(RetryKind.TRANSFER_FAILED, f"the rest of the file could not be served: {detail}")
    if status == 429:
        return RetryLater(RetryKind.THROTTLED, f"download throttled: {detail}")
    return RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"download failed: {detail}")
