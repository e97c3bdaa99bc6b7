"""The PBX provider (Yeastar S-series, OpenVox UC): event reports, downloads, CDRs, sessions.

- ``NewCdr`` reports (pushed while an API session lives) and CDR CSV rows (seed 004, read by
  reconciliation) make the same job for a call (``job_from_cdr``).
- A recording is fetched with a fresh single-use ``random`` per try (the PBX API client: ``api``).
- The session that keeps pushes coming is kept alive on a schedule (``keep_session``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from callvault.errors import BadRequest, PermanentFailure, RetryKind, RetryLater
from callvault.models import FetchJob
from callvault.providers.events import event_file_name, event_id, first_text, jobs_from_events, json_events
from callvault.providers.interface import (
    CallListing,
    DownloadStream,
    InboundRequest,
    PendingDownload,
    ProviderRuntime,
    ReconcileSettings,
    Source,
    TimeWindow,
    WebhookReply,
)
from callvault.providers.pbx.api import (
    CREDENTIAL_FIELDS,
    DOWNLOAD_TRIES,
    PbxClient,
    PbxSession,
    PbxSettings,
    RandomRefused,
    TokenRejected,
    parse_settings,
    renewed,
)
from callvault.providers.pbx.cdr import parse_cdr_csv
from callvault.timefmt import format_wall_clock, iso, parse_wall_clock, plausible_call_time, utc_now

PROVIDER_NAME = "pbx"
ACKNOWLEDGED = {"status": "Success"}


def _file_part(recording: str) -> str:
    # Some firmware reports a path (e.g. "2020/05/05/x.wav"): the file name is the last part.
    return recording.replace("\\", "/").rsplit("/", 1)[-1]


def job_from_cdr(source: Source, cdr: Mapping[str, Any]) -> FetchJob | None:
    """The job for one call record, from a NewCdr report or a CDR CSV row (the same fields):
    None when the call was not recorded. Both paths must make the same job for one call."""
    recording = event_file_name(cdr, "recording")
    if not recording:
        return None  # the call was not recorded: acknowledge, nothing to fetch
    call_id = event_id(cdr, "callid", "call_id", "cdrid")
    if not call_id:
        raise BadRequest("NewCdr report has no callid")
    file_name = _file_part(recording)
    if not file_name or file_name == ".":
        raise BadRequest(f"NewCdr report has an unusable recording name {recording!r}")
    started = first_text(cdr, "timestart")
    try:
        call_time = parse_wall_clock(started, source.timezone)
    except ValueError:
        if started:
            raise BadRequest(f"NewCdr timestart {started!r} is not 'yyyy-mm-dd hh:mm:ss'") from None
        call_time = utc_now().astimezone(source.timezone)  # absent: file it under today
    try:
        plausible_call_time(call_time)
    except ValueError as exc:
        raise BadRequest(f"NewCdr timestart: {exc}") from None
    details = {
        key: first_text(cdr, key)
        for key in ("callfrom", "callto", "status", "type", "cdrid", "callduraction", "talkduraction")
        if cdr.get(key) is not None
    }
    return FetchJob(
        source_id=source.id,
        provider=PROVIDER_NAME,
        call_id=call_id,
        call_time=iso(call_time),
        locator={"recording": recording},
        file_name=file_name,
        reported_at=iso(utc_now()),
        give_up_at=iso(call_time + timedelta(days=source.retention_days)) if source.retention_days else None,
        details=details,
    )


def listing_from_cdr(source: Source, csv_bytes: bytes, window: TimeWindow) -> CallListing:
    """What a CDR CSV says: a job per recorded, settled call; rows it cannot use, and why."""
    table = parse_cdr_csv(csv_bytes)
    listing = CallListing(problems=list(table.problems), audit=csv_bytes)
    for line, row in table.rows:
        listing.calls += 1
        ended = _ended_at(row, source)
        if ended is not None and ended > window.settled_before:
            listing.deferred += 1  # its NewCdr may still be on its way; the next window overlaps
            continue
        try:
            job = job_from_cdr(source, row)
        except BadRequest as exc:
            listing.problems.append(f"line {line}: {exc.message}; skipped")
            continue
        if job is not None:
            listing.jobs.append(job)
    return listing


def _ended_at(row: Mapping[str, str], source: Source) -> datetime | None:
    try:
        started = parse_wall_clock(row.get("timestart", ""), source.timezone)
    except ValueError:
        return None
    duration = row.get("callduraction", "")
    try:
        return started + timedelta(seconds=int(duration)) if duration.isascii() and duration.isdigit() else started
    except (OverflowError, ValueError):
        return None  # near year 9999, or a duration too long to be one: job_from_cdr judges the row


class PbxProvider:
    name = PROVIDER_NAME
    # NewCdr goes out at hang-up; the PBX retries briefly, so ten minutes settle a call.
    reconcile_defaults = ReconcileSettings(wait_for_push=timedelta(minutes=10))
    # At most this many downloads of one source at once, unless the source says (max_concurrent_fetches):
    # an S-series-style PBX is a small appliance serving calls first; two downloads at once leave it room.
    default_max_concurrent_fetches = 2
    credential_fields = CREDENTIAL_FIELDS

    def parse_settings(self, raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> PbxSettings:
        return parse_settings(raw, where=where, credentials=credentials)

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        reports = json_events(request, "a JSON object (a PBX event report) or a list of them")
        found = jobs_from_events(reports, lambda report: self._job_from_report(source, report))
        return WebhookReply(jobs=found.jobs, body=dict(ACKNOWLEDGED), skipped=found.skipped)

    def _job_from_report(self, source: Source, report: Mapping[str, Any]) -> FetchJob | None:
        name = first_text(report, "action", "event").lower()
        if not name:
            raise BadRequest("report has neither 'action' nor 'event'")
        if name != "newcdr":
            return None  # other events (extension status, call status…) carry no recording
        return job_from_cdr(source, report)

    def list_calls(self, source: Source, window: TimeWindow, runtime: ProviderRuntime) -> CallListing:
        """The CDR CSV of the window (seed 004), one job per recorded call, as NewCdr would make it."""
        settings: PbxSettings = source.settings
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        session = PbxSession(source, client, runtime)
        start = format_wall_clock(window.start, source.timezone)
        end = format_wall_clock(window.end, source.timezone)
        csv_bytes = session.with_token(lambda token: client.download_cdr(token, start, end))
        return listing_from_cdr(source, csv_bytes, window)

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        settings: PbxSettings = source.settings
        recording = job.locator.get("recording")
        if not recording:
            raise PermanentFailure("PBX job has no recording name")
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        session = PbxSession(source, client, runtime)
        return [
            PendingDownload(
                file_name=job.file_name, open=lambda offset: _open_recording(session, client, recording, offset)
            )
        ]

    def keep_session(self, source: Source, runtime: ProviderRuntime) -> str:
        """Heartbeat the shared token, or log in again: the PBX pushes reports only while it lives."""
        settings: PbxSettings = source.settings
        client = PbxClient(settings, runtime.http.session(source.id, settings.tls))
        return PbxSession(source, client, runtime).keep_alive()


@contextmanager
def _open_recording(session: PbxSession, client: PbxClient, recording: str, offset: int) -> Iterator[DownloadStream]:
    """Fresh random, then the download (from byte ``offset``) at once: it lives 30 s and works once."""
    token = session.token()
    refused = ""
    fresh_token = False
    for _ in range(DOWNLOAD_TRIES):
        try:
            random = client.get_random(token, recording)
            stream = client.download_recording(token, recording, random, offset)
        except TokenRejected as exc:
            if fresh_token:  # a brand-new token rejected too: the PBX is in trouble, retry later
                raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"PBX rejects a fresh token (errno {exc})") from None
            token, fresh_token = renewed(session, token), True
            continue
        except RandomRefused as exc:
            refused = str(exc)
            continue
        with stream:
            yield stream
        return
    raise RetryLater(
        RetryKind.LINK_EXPIRED, f"PBX refused {DOWNLOAD_TRIES} fresh download links ({refused or 'token rejected'})"
    )


PROVIDER = PbxProvider()
