"""Alibaba number privacy protection (Dyplsapi, API 2017-05-25).

Receipts arrive by HTTP batch push: a JSON array of records, which must be answered HTTP 200
``{"code":0,"msg":"接收成功"}`` within 700 ms or the platform re-sends after 1, 5 and 10
minutes. The webhook therefore only parses and enqueues.

- ``SecretRecording`` records (recording ready: pool_key, sub_id / subs_id, call_id, call_time
  in epoch milliseconds, out_id) become jobs: ``QueryRecordFileDownloadUrl(CallId, CallTime,
  PoolKey)`` with CallTime as ``yyyy-MM-dd HH:mm:ss`` Beijing time gives a link valid 2 hours.
- ``SecretReport`` records (call ended): the recording needs 15–20 minutes after hang-up and
  announces itself with a SecretRecording receipt, so a report of an answered call is only
  noted as an *expected* recording (``records_calls``, the default); reconciliation fetches it
  anyway if no receipt came within the source's ``reconcile.wait_for_push`` (receipts get lost:
  the platform re-sends a batch three times, then drops it). A call that was never answered
  (``start_time`` equals ``release_time``, or ``unconnected_cause`` is set, or it was
  intercepted) ends NO_RECORDING. A pool without recording receipts sets
  ``enqueue_call_reports: true``: reports are then fetched at once and wait out "not ready" in
  the retry workflow.
Recordings can be fetched for a limited time after the call (30 days by default, the seed's
older doc says 14): past ``retention_days`` a job fails explicitly instead of retrying.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from callvault.call_facts import ENDED_AT
from callvault.download_hosts import parse_link
from callvault.errors import BadRequest
from callvault.models import WHOLE_CALL, FetchJob
from callvault.providers.alibaba_rpc import RpcError, classify, strip_url_quotes
from callvault.providers.aliyun_access import ACCESS_FIELDS, CREDENTIAL_FIELDS, RpcAccess, parse_rpc_access
from callvault.providers.events import event_id, first_text, jobs_from_events, json_events
from callvault.providers.interface import (
    InboundRequest,
    PendingDownload,
    ProviderRuntime,
    ReconcileSettings,
    Source,
    WebhookReply,
)
from callvault.timefmt import format_wall_clock, iso, parse_wall_clock, plausible_call_time, utc_now
from callvault.validation import boolean, optional_text, reject_unknown

API_VERSION = "2017-05-25"
DEFAULT_ENDPOINT = "https://dyplsapi.aliyuncs.com"
DEFAULT_RETENTION_DAYS = 30
BEIJING = ZoneInfo("Asia/Shanghai")
RECEIVED = {"code": 0, "msg": "接收成功"}
# Fields only a call-ended report (SecretReport) carries; a recording receipt has none of them.
REPORT_FIELDS = frozenset({"release_time", "release_dir", "release_cause", "start_time", "phone_no", "secret_no"})
# What a record says of the call that its sidecar and events carry (callvault.call_facts): the
# subscription and the caller's own id, the real numbers and the privacy number between them
# (participants, written out under the source's policy), the kind of call.
DETAIL_FIELDS = ("sub_id", "subs_id", "out_id", "phone_no", "peer_no", "secret_no", "call_type")
NOT_READY_CODES = frozenset({"isv.RECORD_NOT_EXIST", "isv.RECORD_FILE_NOT_EXIST", "isv.NO_RECORD_FILE"})
# call_time of a recording receipt: epoch milliseconds, as a JSON number or as text.
EPOCH_MS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
PERMANENT_HINTS = {
    "isv.POOLKEY_NOT_EXISTS": "the pool key does not exist: check the source's pool_key",
    "isv.OUT_OF_SERVICE": "the account is out of service (overdue payment?)",
}


@dataclass(frozen=True)
class DyplsSettings:
    """The ``dypls:`` section of a source."""

    access: RpcAccess
    pool_key: str | None = None
    enqueue_call_reports: bool = False
    records_calls: bool = True


def _parse_settings(raw: Mapping[str, Any], *, where: str, credentials: bool) -> DyplsSettings:
    reject_unknown(raw, ACCESS_FIELDS | {"pool_key", "enqueue_call_reports", "records_calls"}, where)
    return DyplsSettings(
        access=parse_rpc_access(raw, where=where, default_endpoint=DEFAULT_ENDPOINT, credentials=credentials),
        pool_key=optional_text(raw, "pool_key", where, hint="the pool's key, e.g. FC123456"),
        enqueue_call_reports=boolean(raw, "enqueue_call_reports", False, where),
        records_calls=boolean(raw, "records_calls", True, where),
    )


def _details(record: Mapping[str, Any]) -> dict[str, str]:
    """The record's ``DETAIL_FIELDS``; one that is malformed is left out, never a reason to lose
    the recording (the sub_id, out_id and numbers are facts about it, not needed to fetch it)."""
    details = {}
    for key in DETAIL_FIELDS:
        try:
            value = first_text(record, key)
        except BadRequest:
            continue
        if value:
            details[key] = value
    return details


def _release_time(record: Mapping[str, Any]) -> datetime | None:
    """When a reported call ended (``release_time``, Beijing wall clock), if it says so plausibly."""
    text = first_text(record, "release_time")
    if not text:
        return None
    try:
        return plausible_call_time(parse_wall_clock(text, BEIJING))
    except ValueError:
        return None  # a fact of the call, not needed to fetch it: left out rather than refused


def _call_time(record: Mapping[str, Any]) -> datetime:
    """Recording receipts give epoch milliseconds, call reports Beijing wall-clock text; either
    must be a time a call can have had (year 9999 is a rejected record, not an overflow)."""
    text = first_text(record, "call_time")
    if not text:
        raise ValueError("the record has none")
    if EPOCH_MS.fullmatch(text):
        try:
            moment = datetime.fromtimestamp(float(text) / 1000, BEIJING)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{text[:40]} is not a plausible epoch in milliseconds") from None
    else:
        moment = parse_wall_clock(text, BEIJING)
    return plausible_call_time(moment)


def _unanswered(record: Mapping[str, Any]) -> str | None:
    """Why a call-ended report's call cannot have a recording, or None if it may have one."""
    if first_text(record, "call_type") == "4":
        return "the call was intercepted (call_type 4): no recording"
    cause = first_text(record, "unconnected_cause")
    if cause not in ("", "0"):
        return f"the call was not connected (unconnected_cause {cause}): no recording"
    started, released = first_text(record, "start_time"), first_text(record, "release_time")
    if "start_time" in record and not started:
        return "the call was not answered (no start_time): no recording"
    if started and started == released:
        return "the call was not answered (start_time equals release_time): no recording"
    return None


class DyplsProvider:
    name = "dypls"
    # The recording receipt follows hang-up by 15-20 minutes (the platform's own figure).
    reconcile_defaults = ReconcileSettings(interval=timedelta(minutes=5), wait_for_push=timedelta(minutes=30))
    # At most this many downloads of one source at once, unless the source says (max_concurrent_fetches):
    # an Alibaba account's API rate (queries per second) is shared with the customer's own use.
    default_max_concurrent_fetches = 5
    credential_fields = CREDENTIAL_FIELDS

    def parse_settings(self, raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> DyplsSettings:
        return _parse_settings(raw, where=where, credentials=credentials)

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        records = json_events(request, "a JSON array of receipt records")
        # The platform re-sends a batch it was not answered 200 three times, then drops it: one
        # unusable record must not lose the good ones. They are enqueued; the bad ones are
        # answered (and logged) with the reason, and nothing re-sends them.
        found = jobs_from_events(records, lambda record: self._job_from_record(source, record), tolerate_bad=True)
        if found.problems and not found.jobs and not found.skipped:
            raise BadRequest("; ".join(found.problems))
        body: dict[str, Any] = dict(RECEIVED)
        if found.problems:
            body["rejected"] = found.problems
        return WebhookReply(jobs=found.jobs, body=body, skipped=found.skipped, rejected=found.problems)

    def _job_from_record(self, source: Source, record: Mapping[str, Any]) -> FetchJob | None:
        settings: DyplsSettings = source.settings
        if not REPORT_FIELDS & set(record):
            return self._fetch_job(source, record)  # a recording receipt: fetch it
        if not (settings.records_calls or settings.enqueue_call_reports):
            return None  # the pool records nothing: a call report announces no recording
        job = self._fetch_job(source, record)
        no_recording = _unanswered(record)
        if no_recording:
            return replace(job, no_recording=no_recording)
        # Nothing confirms a recording yet: if none ever appears, the call ends NO_RECORDING.
        job = replace(job, recording_confirmed=False)
        if settings.enqueue_call_reports:
            return job
        return replace(job, not_before=iso(utc_now() + source.reconcile.wait_for_push))

    def _fetch_job(self, source: Source, record: Mapping[str, Any]) -> FetchJob:
        settings: DyplsSettings = source.settings
        call_id = event_id(record, "call_id")
        if not call_id:
            raise BadRequest("record has no call_id")
        pool_key = event_id(record, "pool_key") or settings.pool_key or ""
        if not pool_key:
            raise BadRequest("record has no pool_key and the source configures none")
        if settings.pool_key and pool_key != settings.pool_key:
            raise BadRequest(f"record is for pool {pool_key!r}, this source is {settings.pool_key!r}")
        try:
            called_at = _call_time(record)
        except ValueError as exc:
            raise BadRequest(f"call_time: {exc}") from None
        retention = source.retention_days or DEFAULT_RETENTION_DAYS
        details = _details(record)
        ended = _release_time(record)
        if ended is not None:
            details[ENDED_AT] = iso(ended)
        return FetchJob(
            source_id=source.id,
            provider=self.name,
            call_id=call_id,
            call_time=iso(called_at.astimezone(source.timezone)),
            locator={"call_id": call_id, "call_time": format_wall_clock(called_at, BEIJING), "pool_key": pool_key},
            file_name=WHOLE_CALL,
            reported_at=iso(utc_now()),
            give_up_at=iso(called_at + timedelta(days=retention)),
            details=details,
        )

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        settings: DyplsSettings = source.settings
        access = settings.access
        http = runtime.http.session(source.id)
        client = access.client(API_VERSION, http)
        params = {
            "CallId": job.locator["call_id"],
            "CallTime": job.locator["call_time"],
            "PoolKey": job.locator["pool_key"],
        }
        try:
            reply = client.call("QueryRecordFileDownloadUrl", params)
            url = strip_url_quotes(str(reply.get("DownloadUrl") or ""))
            if not url:
                # OK without a link: the recording is not generated yet (15-20 min after hang-up).
                raise RpcError("isv.RECORD_NOT_EXIST", "answered OK without DownloadUrl", http_status=200)
        except RpcError as error:
            raise classify(error, not_ready=NOT_READY_CODES, permanent_hints=PERMANENT_HINTS) from None
        # Parsed now: a link no parser can read ends the job FAILED here, with the reason.
        file_name = parse_link(url).file_name or f"{job.call_id}.mp3"
        return [PendingDownload(file_name, partial(access.open_link, http, url))]


PROVIDER = DyplsProvider()
