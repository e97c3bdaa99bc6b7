"""Alibaba Cloud Call Center (CCC): API 2017-07-05 and 2020-07-01.

Call-ended signals:
- 2017-07-05 has no server-side webhook: the softphone SDK in the agent's browser sees the
  call end (its callbacks carry ``contactId``) and the customer's front or back end forwards it
  to us, authenticated with the source token (and optionally an HMAC signature, see webhook.py).
  A forwarded event names a contact (every file of the call: ``DownloadAllTypeRecording``) or
  one file (``DownloadRecording``).
- 2020-07-01 pushes subscription events; ``RecordingReady`` → ``GetMonoRecording`` and
  ``DualTrackRecordingReady`` → ``GetMultiChannelRecording``.
Right after hang-up a recording may not exist yet (``NotExist.Record``): within the source's
not-ready window that means "try again later", after it the recording is reported missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from callvault.errors import BadRequest, ConfigError, FetchError, PermanentFailure
from callvault.models import WHOLE_CALL, FetchJob
from callvault.providers.alibaba_rpc import AlibabaRpcClient, RpcError, classify, strip_url_quotes
from callvault.providers.aliyun_access import ACCESS_FIELDS, CREDENTIAL_FIELDS, RpcAccess, parse_rpc_access
from callvault.providers.events import event_file_name, event_id, first_text, jobs_from_events, json_events
from callvault.providers.interface import (
    CallListing,
    InboundRequest,
    PendingDownload,
    ProviderRuntime,
    ReconcileSettings,
    Source,
    TimeWindow,
    WebhookReply,
)
from callvault.timefmt import iso, plausible_call_time, utc_now
from callvault.validation import reject_unknown, text, whole_number

API_2017 = "2017-07-05"
API_2020 = "2020-07-01"
DEFAULT_ENDPOINT = "https://ccc.{region}.aliyuncs.com"
DEFAULT_NOT_READY_WINDOW = 1800
# 2020-07-01 events and the action that fetches what they announce.
RECORDING_EVENTS = {"recordingready": "mono", "dualtrackrecordingready": "multichannel"}
EVENT_OF = {"mono": "RecordingReady", "multichannel": "DualTrackRecordingReady"}
ACTIONS_2020 = {"mono": "GetMonoRecording", "multichannel": "GetMultiChannelRecording"}
NOT_READY_CODES = frozenset({"NotExist.Record", "NotExists.Recording", "NotExist.Recording"})
PERMANENT_HINTS = {
    "NotExist.Instance": "call center instance does not exist: check the source's instance_id",
    "NotExists.InstanceId": "call center instance does not exist: check the source's instance_id",
    "OssNotOpen": "the instance does not store recordings in OSS: enable recording storage in the CCC console",
}
ACCEPTED = {"code": "OK", "message": "accepted"}
# ListCallDetailRecords: at most 100 records a page; 2017-07-05 refuses windows over 7 days.
PAGE_SIZE = 100
MAX_LIST_WINDOW = timedelta(days=7)
# Safety stop for a reply whose paging never ends (a million records of one window).
MAX_PAGES = 10_000
RECORDING_KINDS = tuple(ACTIONS_2020)
# An event time given as a number (epoch seconds or milliseconds), as text or as JSON.
EPOCH = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class CccSettings:
    """The ``ccc:`` section of a source."""

    api_version: str
    instance_id: str
    access: RpcAccess
    not_ready_window_seconds: int = DEFAULT_NOT_READY_WINDOW
    # 2020-07-01: the recordings reconciliation archives for a call whose events were lost.
    reconcile_recordings: tuple[str, ...] = ("mono",)


def _parse_settings(raw: Mapping[str, Any], *, where: str, credentials: bool) -> CccSettings:
    reject_unknown(
        raw, ACCESS_FIELDS | {"api_version", "instance_id", "not_ready_window_seconds", "reconcile_recordings"}, where
    )
    version = str(raw.get("api_version", API_2017))
    if version not in (API_2017, API_2020):
        raise ConfigError(f"{where}: api_version must be {API_2017} or {API_2020}, got {version!r}")
    kinds = raw.get("reconcile_recordings", ["mono"])
    if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(RECORDING_KINDS):
        raise ConfigError(f"{where}: reconcile_recordings must list some of {', '.join(RECORDING_KINDS)}")
    if "reconcile_recordings" in raw and version != API_2020:
        raise ConfigError(f"{where}: reconcile_recordings applies to api_version {API_2020} only")
    return CccSettings(
        api_version=version,
        instance_id=text(raw, "instance_id", where),
        access=parse_rpc_access(raw, where=where, default_endpoint=DEFAULT_ENDPOINT, credentials=credentials),
        not_ready_window_seconds=whole_number(raw, "not_ready_window_seconds", DEFAULT_NOT_READY_WINDOW, where, low=0),
        reconcile_recordings=tuple(dict.fromkeys(kinds)),
    )


def _event_time(event: Mapping[str, Any], source: Source) -> datetime:
    """When the call happened: epoch ms / s, or ISO 8601; absent → now (filed under today)."""
    text = first_text(event, "callTime", "startTime", "eventTime")
    if not text:
        return utc_now().astimezone(source.timezone)
    if EPOCH.fullmatch(text):
        number = float(text)
        seconds = number / 1000 if number > 10**11 else number  # epoch ms as the SDK gives it
        try:
            moment = datetime.fromtimestamp(seconds, source.timezone)
        except (OverflowError, OSError, ValueError):
            raise BadRequest(f"event time {text[:40]!r} is not a plausible epoch time") from None
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"event time {text[:40]!r} is neither epoch milliseconds nor ISO 8601") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=source.timezone)
    try:
        return plausible_call_time(moment).astimezone(source.timezone)  # checked first: no year 10000
    except ValueError as exc:
        raise BadRequest(f"event time: {exc}") from None


class CccProvider:
    name = "ccc"
    # A forwarded 2017 event is immediate; 2020 recording events follow once the file is written.
    reconcile_defaults = ReconcileSettings(wait_for_push=timedelta(minutes=30))
    # At most this many downloads of one source at once, unless the source says (max_concurrent_fetches):
    # an Alibaba account's API rate (queries per second) is shared with the customer's own use.
    default_max_concurrent_fetches = 5
    credential_fields = CREDENTIAL_FIELDS

    def parse_settings(self, raw: Mapping[str, Any], *, where: str, credentials: bool = True) -> CccSettings:
        return _parse_settings(raw, where=where, credentials=credentials)

    def parse_webhook(self, source: Source, request: InboundRequest) -> WebhookReply:
        events = json_events(request, "a JSON object (one event) or a list of them")
        found = jobs_from_events(events, lambda event: self._job_from_event(source, event))
        return WebhookReply(jobs=found.jobs, body={**ACCEPTED, "jobs": len(found.jobs)}, skipped=found.skipped)

    def _job_from_event(self, source: Source, event: Mapping[str, Any]) -> FetchJob | None:
        settings: CccSettings = source.settings
        instance = event_id(event, "instanceId", "InstanceId", "instance_id")
        if instance and instance != settings.instance_id:
            raise BadRequest(f"event is for instance {instance!r}, this source is {settings.instance_id!r}")
        event_type = first_text(event, "eventType", "EventType", "event_type").lower()
        selector = WHOLE_CALL
        locator: dict[str, str] = {}
        if event_type:
            if event_type not in RECORDING_EVENTS:
                return None  # CDRReady and the like announce no recording
            if settings.api_version != API_2020:
                raise BadRequest(f"{event_type!r} is a 2020-07-01 event, this source speaks {settings.api_version}")
            kind = RECORDING_EVENTS[event_type]
            selector, locator["recording"] = f"{WHOLE_CALL}{kind}", kind
        contact_id = event_id(event, "contactId", "ContactId", "contact_id")
        if not contact_id:
            raise BadRequest("event has no contactId")
        file_name = event_file_name(event, "fileName", "FileName", "file_name")
        if file_name and not event_type:
            locator["file_name"] = file_name
        locator["contact_id"] = contact_id
        call_time = _event_time(event, source)
        return FetchJob(
            source_id=source.id,
            provider=self.name,
            call_id=contact_id,
            call_time=iso(call_time),
            locator=locator,
            file_name=locator.get("file_name", selector),
            reported_at=iso(utc_now()),
            give_up_at=iso(call_time + timedelta(days=source.retention_days)) if source.retention_days else None,
        )

    def resolve(self, source: Source, job: FetchJob, runtime: ProviderRuntime) -> list[PendingDownload]:
        settings: CccSettings = source.settings
        access = settings.access
        http = runtime.http.session(source.id)
        try:
            links = self._links(access.client(settings.api_version, http), settings, job)
        except RpcError as error:
            raise self._classified(error, settings, job) from None
        return [PendingDownload(file_name, partial(access.open_link, http, url)) for file_name, url in links]

    def _links(self, client: AlibabaRpcClient, settings: CccSettings, job: FetchJob) -> list[tuple[str, str]]:
        contact_id = job.locator.get("contact_id", job.call_id)
        if settings.api_version == API_2020:
            kind = job.locator.get("recording", "mono")
            reply = client.call(ACTIONS_2020[kind], {"InstanceId": settings.instance_id, "ContactId": contact_id})
            if not reply.get("Data"):
                # Some instances answer OK with no Data while the recording is being written.
                raise RpcError("NotExists.Recording", f"{ACTIONS_2020[kind]} answered without Data", http_status=200)
            return [_link(reply.get("Data"), "FileUrl")]
        if "file_name" in job.locator:
            reply = client.call(
                "DownloadRecording", {"InstanceId": settings.instance_id, "FileName": job.locator["file_name"]}
            )
            _, url = _link(reply.get("MediaDownloadParam"), "SignatureUrl")
            return [(job.file_name, url)]  # the file this job claimed, whatever name the reply gives
        reply = client.call("DownloadAllTypeRecording", {"InstanceId": settings.instance_id, "ContactId": contact_id})
        listing = reply.get("MediaDownloadParamList")
        params = listing.get("MediaDownloadParam") if isinstance(listing, dict) else listing
        if isinstance(params, dict):
            params = [params]  # a one-element list may come unwrapped
        if not params:
            # OK with nothing listed: the files are not written yet, like NotExist.Record.
            raise RpcError("NotExist.Record", "DownloadAllTypeRecording listed no files", http_status=200)
        if not isinstance(params, list):
            raise PermanentFailure("DownloadAllTypeRecording answered without MediaDownloadParamList")
        return [_link(param, "SignatureUrl") for param in params]

    def list_calls(self, source: Source, window: TimeWindow, runtime: ProviderRuntime) -> CallListing:
        """ListCallDetailRecords of the window (paged, in spans of at most 7 days): a job per
        recorded, settled call, the same the call's forwarded event or recording events make."""
        settings: CccSettings = source.settings
        client = settings.access.client(settings.api_version, runtime.http.session(source.id))
        listing = CallListing()
        start = window.start
        while start < window.end:
            end = min(window.end, start + MAX_LIST_WINDOW)
            for record in self._records(client, settings, start, end):
                self._add_record(listing, source, record, window)
            start = end
        return listing

    def _records(
        self, client: AlibabaRpcClient, settings: CccSettings, start: datetime, end: datetime
    ) -> Iterator[Mapping[str, Any]]:
        times = {"StartTime": _epoch_ms(start)}
        times["StopTime" if settings.api_version == API_2017 else "EndTime"] = _epoch_ms(end)
        total: int | None = None
        for page in range(1, MAX_PAGES + 1):
            params = {"InstanceId": settings.instance_id, "PageNumber": str(page), "PageSize": str(PAGE_SIZE), **times}
            try:
                reply = client.call("ListCallDetailRecords", params)
            except RpcError as error:
                raise classify(error, permanent_hints=PERMANENT_HINTS) from None
            listed = reply.get("CallDetailRecords") if settings.api_version == API_2017 else reply.get("Data")
            if not isinstance(listed, Mapping):
                raise PermanentFailure("ListCallDetailRecords answered without its list of records")
            records = _unwrapped(listed.get("List"), "CallDetailRecord")
            yield from records
            if page == 1 and isinstance(listed.get("TotalCount"), int) and listed["TotalCount"] > 0:
                total = listed["TotalCount"]  # 2020-07-01 fills it on the first page only
            if len(records) < PAGE_SIZE or (total is not None and page * PAGE_SIZE >= total):
                return
        raise PermanentFailure(f"ListCallDetailRecords did not end after {MAX_PAGES} pages")

    def _add_record(self, listing: CallListing, source: Source, record: Mapping[str, Any], window: TimeWindow) -> None:
        settings: CccSettings = source.settings
        listing.calls += 1
        try:
            contact_id = event_id(record, "ContactId")
        except BadRequest as exc:
            listing.problems.append(f"record skipped: {exc.message}")
            return
        started = record.get("StartTime")
        if not contact_id or isinstance(started, bool) or not isinstance(started, int | str):
            listing.problems.append(f"record without ContactId or StartTime: {sorted(record)}")
            return
        ended = _record_end(record, settings.api_version)
        if ended is not None and ended > window.settled_before:
            listing.deferred += 1  # its event may still be on its way; the next window overlaps
            return
        # The same events the push path would have received for this call.
        if settings.api_version == API_2017:
            recorded = bool(_unwrapped(record.get("Recordings"), "Recording"))
            events = [{"contactId": contact_id, "callTime": started}] if recorded else []
        else:
            recorded = record.get("RecordingReady") is True
            kinds = settings.reconcile_recordings if recorded else ()
            events = [{"contactId": contact_id, "callTime": started, "eventType": EVENT_OF[kind]} for kind in kinds]
        for event in events:
            try:
                job = self._job_from_event(source, event)
            except BadRequest as exc:
                listing.problems.append(f"contact {contact_id}: {exc.message}")
                continue
            if job is not None:
                listing.jobs.append(job)

    def _classified(self, error: RpcError, settings: CccSettings, job: FetchJob) -> FetchError:
        started = datetime.fromisoformat(job.reported_at or job.call_time)
        within_window = utc_now() - started <= timedelta(seconds=settings.not_ready_window_seconds)
        if error.code in NOT_READY_CODES and not within_window:
            minutes = settings.not_ready_window_seconds // 60
            return PermanentFailure(
                f"CCC has no recording for this call {minutes} minutes after it was reported ({error.code})"
            )
        return classify(error, not_ready=NOT_READY_CODES, permanent_hints=PERMANENT_HINTS)


def _link(param: Any, url_field: str) -> tuple[str, str]:
    """(file name, URL) of one download parameter; the URL may come wrapped in quotes."""
    if not isinstance(param, dict):
        raise PermanentFailure(f"CCC answered without a download parameter ({url_field})")
    url = strip_url_quotes(str(param.get(url_field) or ""))
    file_name = str(param.get("FileName") or "").strip()
    if not url or not file_name:
        raise PermanentFailure(f"CCC download parameter lacks FileName or {url_field}")
    return file_name, url


def _epoch_ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _unwrapped(value: Any, inner: str) -> list[Mapping[str, Any]]:
    """A list the API may nest (``{"Recording": [...]}``) or send as one unwrapped object."""
    if isinstance(value, Mapping) and inner in value:
        value = value[inner]
    if isinstance(value, Mapping):
        value = [value]
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _record_end(record: Mapping[str, Any], api_version: str) -> datetime | None:
    """When a listed call ended: 2020 gives ReleaseTime, 2017 StartTime plus Duration (s)."""
    try:
        if api_version == API_2020 and record.get("ReleaseTime") not in (None, ""):
            return datetime.fromtimestamp(int(record["ReleaseTime"]) / 1000, UTC)
        started = datetime.fromtimestamp(int(record["StartTime"]) / 1000, UTC)
        return started + timedelta(seconds=int(record.get("Duration") or 0))
    except (TypeError, ValueError, OverflowError, OSError):
        return None


PROVIDER = CccProvider()
