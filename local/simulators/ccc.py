"""Strict simulator of Alibaba Cloud Call Center (CCC) recording APIs, 2017-07-05 and 2020-07-01.

A real RPC server on loopback behind the verifying gateway of :mod:`local.simulators.aliyun`,
with an OSS-style file server (:mod:`local.simulators.oss`) for the download URLs.

**2017-07-05** (seeds 000 / 001):

* ``DownloadAllTypeRecording(ContactId, InstanceId)`` -> ``MediaDownloadParamList.
  MediaDownloadParam[]`` of ``{FileName, SignatureUrl}``; ``DownloadRecording(InstanceId,
  FileName)`` -> one ``MediaDownloadParam``; ``ListRecordingsByContactId(ContactId,
  InstanceId)`` -> ``Recordings.Recording[]``.  URLs are valid one hour and ``SignatureUrl``
  comes wrapped in quotes "as the docs say" (``quote_style``: ``ascii`` ``""url""``
  (default), ``ascii_single`` ``"url"``, ``typographic`` ``“”url“”`` or ``none``).
* File rule: a call with ``transferred_legs = N`` has ``N + 1`` agent legs; it yields **one**
  dual-track ``.mkv`` for the whole contact (listed first, as in the seed) plus **one merged
  ``.wav`` per leg** -> ``N + 2`` files (untransferred: 2 files, like the seed's example;
  one transfer: 3 files).
* Errors, HTTP 404 as in seed 001: ``NotExist.Instance`` (another InstanceId),
  ``NotExist.Record`` (unknown contact/file, and until the recording is ready
  ``ready_after_s`` after hang-up), ``OssNotOpen`` (``oss_open=False``).

**2020-07-01**: ``GetMonoRecording(InstanceId, ContactId, ExpireSeconds?)`` -> ``Data.{FileUrl,
FileName, Duration(ms)}`` (a mono ``.wav`` of the whole contact) and
``GetMultiChannelRecording(InstanceId, ContactId)`` -> ``Data.{FileUrl, FileName}`` (the dual-track
``.mkv``); URLs valid one day (``ExpireSeconds`` overrides for the mono one).  Errors:
400 ``Parameter.Blank``, 400 ``Parameter.Minimum`` (``ExpireSeconds < 1``), 404
``NotExists.InstanceId``.  The vendor documents no "not ready" code; this simulator answers
404 ``NotExists.Recording`` (``not_ready_style="error"``) or, with ``not_ready_style="empty"``,
200 ``OK`` with ``"Data": null`` so a client can be tested against both.

**ListCallDetailRecords** (both versions; request and reply fields as in the vendor's SDK models,
``aliyun-openapi-meta`` ``ccc/ListCallDetailRecords.json`` and the 2020-07-01 API reference):
lists the calls whose ``StartTime`` (epoch ms) lies in ``[StartTime, StopTime]`` (2017) or
``[StartTime, EndTime]`` (2020), both inclusive, newest first; ``InstanceId``, ``PageNumber`` and
``PageSize`` are required, the window defaults to today 00:00 (UTC+8) .. now (documented for 2020,
assumed for 2017).

* 2017-07-05 -> ``CallDetailRecords.{TotalCount, PageNumber, PageSize, List.CallDetailRecord[]}``,
  each with ``Agents.CallDetailAgent[]`` and ``Recordings.Recording[]`` (the merged ``.wav`` legs
  that ``DownloadRecording`` accepts, once ready).  Filters: ``ContactId``, ``ContactType``,
  ``ContactDisposition``, ``PhoneNumber`` (calling or called number), ``Criteria`` (part of either
  number), ``WithRecording``.  Limits: ``PageNumber`` 1-5000 (SDK metadata), ``PageSize`` 1-100 and a
  window of at most 7 days (not found in the vendor docs; kept because they are the stricter
  reading); beyond them 400 ``InvalidParameter`` (inferred code), a value that is not an integer
  400 ``Invalid{Name}`` (gateway).
* 2020-07-01 -> ``Data.{TotalCount, PageNumber, PageSize, List[]}`` of ``{ContactId, StartTime,
  ReleaseTime, CallDuration (s, a string), RecordingDuration, RecordingReady, ...}``.
  ``TotalCount`` is only filled on page 1 and is 0 on later pages, as documented.  ``ContactId``
  overrides every other filter (documented); else ``CallingNumber``, ``CalledNumber``,
  ``ContactType``, ``ContactDisposition``, ``AgentId``, ``Criteria`` (``{"phoneNumber": part}``),
  ``SortOrder`` (``DESC`` default, ``ASC``).  ``PageNumber`` and ``PageSize`` 1-100 (documented);
  beyond them 400 ``Parameter.Invalid``, a non-integer 400 ``Parameter.Format`` (codes documented
  for other 2020-07-01 actions, inferred here), another instance 404 ``NotExists.InstanceId``.
  ``RecordingReady`` turns true once the recording is ready.

Other documented filters (skill groups, satisfaction, early media, ``OrderBy``/``OrderByField``)
are accepted and not applied.  ``place_call(recorded=False)`` makes a call that is listed without
recordings (``RecordingReady`` false) and that every download action answers like a recording
that is not ready.

Events: :meth:`CccSimulator.push_event` POSTs one JSON object per event, shaped like the
2020-07-01 event notifications (``eventTime``, ``eventType``, ``instanceId``, ``contactId``,
and for ``RecordingReady`` / ``DualTrackRecordingReady`` ``startTime``, ``endTime``,
``duration`` (s), ``agentIds``, ``fileName``, ``downloadURL``).  2017-07-05 has no server-side
webhook: :meth:`CccSimulator.softphone_event` returns what the softphone SDK's hang-up
callback carries, for a test forwarder to post.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from local.simulators.aliyun import (
    AccessKey,
    AliyunRpcSimulator,
    JsonDict,
    RpcContext,
    RpcError,
    iso_utc,
)
from local.simulators.mkv import matroska_audio
from local.simulators.oss import OssSimulator, content_type_for
from local.simulators.wav import make_wav

__all__ = ["QUOTE_STYLES", "CccCall", "CccFile", "CccSimulator", "EventPush", "matroska_audio"]

V2017 = "2017-07-05"
V2020 = "2020-07-01"
#: How ``SignatureUrl`` is wrapped (the docs show both ASCII and typographic quotes).
QUOTE_STYLES: Mapping[str, tuple[str, str]] = {
    "ascii": ('""', '""'),
    "ascii_single": ('"', '"'),
    "typographic": ("“”", "“”"),
    "none": ("", ""),
}
EVENT_TYPES = ("RecordingReady", "DualTrackRecordingReady", "CDRReady")
_BEIJING = dt.timezone(dt.timedelta(hours=8))
_BUCKET_2017 = "cloudcallcenter-online"
_BUCKET_2020 = "ccc-v2-online"
_INTEGER = re.compile(r"-?[0-9]+")
_MAX_WINDOW_2017_MS = 7 * 86400 * 1000
#: Every simulated call ends normally.
_DISPOSITION = "Success"
#: The 2020-07-01 names of the call types (``ContactType`` enum of its API reference).
_V2_CONTACT_TYPES: Mapping[str, str] = {"INBOUND": "Inbound", "OUTBOUND": "Outbound", "INTERNAL": "Internal"}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CccFile:
    """One recording file of a call, stored on the simulator's OSS.

    ``kind``: ``dual_track`` (the 2017 ``.mkv``), ``merged`` (a 2017 per-leg ``.wav``),
    ``mono`` (2020 GetMonoRecording) or ``multi_channel`` (2020 GetMultiChannelRecording).
    """

    file_name: str
    bucket: str
    key: str
    kind: str
    leg: int | None
    duration_s: float
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class CccCall:
    """A finished call placed with :meth:`CccSimulator.place_call` (times are epoch seconds).

    An unrecorded call (``recorded=False``) has no ``files``; its ``mono`` and ``multi_channel``
    name files that were never stored (size 0).
    """

    contact_id: str
    instance_id: str
    caller: str
    callee: str
    agent_id: str
    call_type: str
    start: float
    end: float
    duration_s: float
    transferred_legs: int
    ready_at: float
    files: tuple[CccFile, ...]
    mono: CccFile
    multi_channel: CccFile
    recorded: bool = True

    @property
    def file_names(self) -> tuple[str, ...]:
        """FileNames DownloadAllTypeRecording lists, in order."""
        return tuple(f.file_name for f in self.files)

    def file(self, file_name: str) -> CccFile:
        """The file called ``file_name`` (any API version; KeyError if unknown)."""
        for f in (*self.files, self.mono, self.multi_channel):
            if f.file_name == file_name:
                return f
        raise KeyError(file_name)


@dataclass(frozen=True)
class EventPush:
    """One POST of an event; ``status`` is None when the connection failed."""

    url: str
    event_type: str
    contact_id: str
    status: int | None
    latency_ms: float
    error: str | None
    payload: JsonDict


# --------------------------------------------------------------------------- simulator


class CccSimulator(AliyunRpcSimulator):
    """Alibaba Cloud Call Center recording APIs with simulated calls, files, events and faults."""

    PRODUCT: ClassVar[str] = "CCC"
    HOST_ID: ClassVar[str] = "ccc.cn-shanghai.aliyuncs.com"
    ACTIONS: ClassVar[Mapping[str, frozenset[str]]] = {
        V2017: frozenset(
            {"DownloadAllTypeRecording", "DownloadRecording", "ListRecordingsByContactId", "ListCallDetailRecords"}
        ),
        V2020: frozenset({"GetMonoRecording", "GetMultiChannelRecording", "ListCallDetailRecords"}),
    }
    THREAD_NAME: ClassVar[str] = "ccc-sim"

    def __init__(
        self,
        *,
        instance_id: str = "9cfad875-6260-4a53-ab6e-b13e3fb31f7d",
        credentials: Mapping[str, str | AccessKey] | None = None,
        api_versions: Iterable[str] = (V2017, V2020),
        not_ready_seconds: float = 15.0,
        oss_open: bool = True,
        quote_style: str = "ascii",
        url_ttl_s: float = 3600.0,
        v2_url_ttl_s: float = 86400.0,
        not_ready_style: str = "error",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        oss: OssSimulator | None = None,
        timestamp_clock: Callable[[], float] | None = None,
        seed: int | str | None = None,
    ) -> None:
        """Configure; nothing listens until :meth:`start` (which also starts the file server).

        ``seed`` makes contact ids and file names repeatable; by default they differ per run,
        so a restarted local stack never reuses ids its ledger has already seen.

        ``not_ready_seconds``: default delay between hang-up and the recording being
        downloadable (the vendor does not publish it).  ``oss`` lets several simulators share
        one file server; by default each has its own, on the same simulated clock.
        """
        super().__init__(
            credentials=credentials,
            api_versions=api_versions,
            host=host,
            port=port,
            clock=clock,
            timestamp_clock=timestamp_clock,
        )
        if quote_style not in QUOTE_STYLES:
            raise ValueError(f"quote_style must be one of {tuple(QUOTE_STYLES)}")
        if not_ready_style not in ("error", "empty"):
            raise ValueError("not_ready_style must be 'error' or 'empty'")
        self.instance_id = instance_id
        self.not_ready_seconds = float(not_ready_seconds)
        self.oss_open = oss_open
        self.quote_style = quote_style
        self.url_ttl_s = float(url_ttl_s)
        self.v2_url_ttl_s = float(v2_url_ttl_s)
        self.not_ready_style = not_ready_style
        self._own_oss = oss is None
        self.oss = oss if oss is not None else OssSimulator(host=host, clock=self.now)
        self._calls: dict[str, CccCall] = {}
        self._by_file: dict[str, tuple[CccCall, CccFile]] = {}
        self._events: list[EventPush] = []
        self._seq = 80333360
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the file server (if owned) and the RPC server; returns self."""
        if self._own_oss:
            self.oss.start()
        super().start()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        super().stop()
        if self._own_oss:
            self.oss.stop()

    # ------------------------------------------------------------------ calls

    @property
    def calls(self) -> list[CccCall]:
        """Calls placed so far."""
        with self._lock:
            return list(self._calls.values())

    def call(self, contact_id: str) -> CccCall:
        """The call with ``contact_id`` (KeyError if unknown)."""
        with self._lock:
            return self._calls[contact_id]

    def file_bytes(self, f: CccFile) -> bytes:
        """Exact bytes of a recording file."""
        return self.oss.get_object(f.bucket, f.key)

    def place_call(
        self,
        *,
        transferred_legs: int = 0,
        duration_s: float = 30.0,
        contact_id: str | None = None,
        ready_after_s: float | None = None,
        caller: str = "13888880000",
        callee: str = "057112340000",
        agent_id: str | None = None,
        call_type: str = "INBOUND",
        recorded: bool = True,
    ) -> CccCall:
        """Simulate a call that hangs up now; its files become downloadable ``ready_after_s`` later.

        The talk time ``duration_s`` is split evenly over the ``transferred_legs + 1`` legs.
        ``recorded=False``: the call is listed by ListCallDetailRecords but has no recording.
        """
        if transferred_legs < 0:
            raise ValueError("transferred_legs must be >= 0")
        if duration_s <= 0:
            raise ValueError("duration_s must be positive")
        with self._lock:
            now = self.now()
            self._seq += 1 + transferred_legs
            seq = self._seq
            if contact_id is None:
                if V2017 in self.api_versions:
                    contact_id = str(self._rng.randrange(1_000_000_000, 9_999_999_999))
                else:
                    contact_id = f"job-{self._rng.randrange(10**18, 10**19)}"
            if contact_id in self._calls:
                raise ValueError(f"contact {contact_id} already exists")
        ready_at = now + (self.not_ready_seconds if ready_after_s is None else float(ready_after_s))
        start = now - duration_s
        agent = agent_id or f"agent@{self.instance_id}"
        local = dt.datetime.fromtimestamp(start, _BEIJING)
        seed = f"ccc:{self.instance_id}:{contact_id}"

        def store(name: str, bucket: str, key: str, kind: str, leg: int | None, secs: float, data: bytes) -> CccFile:
            if not recorded:  # named, never stored
                return CccFile(
                    name, bucket, key, kind, leg, secs, 0, hashlib.sha256(b"").hexdigest(), content_type_for(key)
                )
            obj = self.oss.put_object(bucket, key, data, available_at=ready_at)
            return CccFile(name, bucket, key, kind, leg, secs, obj.size, obj.sha256, obj.content_type)

        dual = matroska_audio(duration_s, seed=f"{seed}:dual") if recorded else b""
        mono_audio = make_wav(duration_s, seed=f"{seed}:mono") if recorded else b""
        legs = transferred_legs + 1
        leg_s = [round(duration_s / legs, 3)] * legs
        leg_s[-1] = round(duration_s - sum(leg_s[:-1]), 3)

        mkv_name = f"{contact_id}-{local:%H-%M-%S}.mkv"
        files = [
            store(
                mkv_name,
                _BUCKET_2017,
                f"accrec/acc{seq % 10000}/{local:%y%m%d}/{mkv_name}",
                "dual_track",
                None,
                duration_s,
                dual,
            )
        ]
        offset = 0.0
        for leg in range(legs):
            name = f"{int((start + offset) * 1000)}{seq - transferred_legs + leg:011d}.wav"
            # An untransferred call's only leg is the whole call: share the bytes with the 2020 mono file.
            data = mono_audio if legs == 1 or not recorded else make_wav(leg_s[leg], seed=f"{seed}:leg{leg}")
            files.append(
                store(name, _BUCKET_2017, f"record/{self.instance_id}/{name}", "merged", leg, leg_s[leg], data)
            )
            offset += leg_s[leg]
        v2_prefix = f"{self.instance_id}/{local:%Y/%m}"
        mono = store(
            f"{contact_id}.wav",
            _BUCKET_2020,
            f"ccc-record/{v2_prefix}/{contact_id}.wav",
            "mono",
            None,
            duration_s,
            mono_audio,
        )
        multi = store(
            f"{contact_id}.mkv",
            _BUCKET_2020,
            f"ccc-record-mixed/{v2_prefix}/{contact_id}.mkv",
            "multi_channel",
            None,
            duration_s,
            dual,
        )
        call = CccCall(
            contact_id=contact_id,
            instance_id=self.instance_id,
            caller=caller,
            callee=callee,
            agent_id=agent,
            call_type=call_type,
            start=start,
            end=now,
            duration_s=duration_s,
            transferred_legs=transferred_legs,
            ready_at=ready_at,
            files=tuple(files) if recorded else (),
            mono=mono,
            multi_channel=multi,
            recorded=recorded,
        )
        with self._lock:
            self._calls[contact_id] = call
            for f in (*call.files, mono, multi) if recorded else ():
                self._by_file[f.file_name] = (call, f)
        return call

    # ------------------------------------------------------------------ events

    def softphone_event(self, call: CccCall) -> JsonDict:
        """What the 2017 softphone SDK's hang-up callback gives the agent's browser.

        The SDK's callbacks carry the contact id (``contactId``, also ``jobId``); the rest is
        the call context a customer's forwarder typically passes on.  No server pushes this.
        """
        return {
            "callback": "onHangUp",
            "contactId": call.contact_id,
            "jobId": call.contact_id,
            "instanceId": call.instance_id,
            "callType": call.call_type,
            "callingNumber": call.caller,
            "calledNumber": call.callee,
            "agentId": call.agent_id,
            "timestamp": int(call.end * 1000),
        }

    def event_payload(self, call: CccCall, event_type: str = "RecordingReady") -> JsonDict:
        """The 2020-07-01 event notification body for ``event_type`` (URLs issued now, valid a day)."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {EVENT_TYPES}")
        if event_type != "CDRReady" and not call.recorded:
            raise ValueError(f"contact {call.contact_id} was not recorded: no {event_type} event")
        body: JsonDict = {
            "eventTime": iso_utc(self.now(), millis=True),
            "eventType": event_type,
            "instanceId": call.instance_id,
            "contactId": call.contact_id,
        }
        if event_type == "CDRReady":
            body.update(
                callType=call.call_type,
                caller=call.caller,
                callee=call.callee,
                startTime=iso_utc(call.start),
                releaseTime=iso_utc(call.end),
                duration=round(call.duration_s),
                agentIds=call.agent_id,
            )
            return body
        f = call.mono if event_type == "RecordingReady" else call.multi_channel
        body.update(
            startTime=iso_utc(call.start),
            endTime=iso_utc(call.end),
            duration=round(call.duration_s),
            agentIds=call.agent_id,
            fileName=f.file_name,
            downloadURL=self.oss.sign_url(f.bucket, f.key, self._expires(self.v2_url_ttl_s, "push_event")),
        )
        return body

    def push_event(
        self,
        call: CccCall,
        event_type: str = "RecordingReady",
        *,
        url: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
    ) -> EventPush:
        """POST the event JSON to ``url`` (one attempt, synchronously) and record the outcome.

        Push after the recording is ready (``advance_time``), as the platform would.
        """
        payload = self.event_payload(call, event_type)
        req = urllib.request.Request(  # noqa: S310 - URL chosen by the test or local stack
            url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json;charset=UTF-8", **dict(headers or {})},
        )
        status: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        push = EventPush(url, event_type, call.contact_id, status, (time.perf_counter() - t0) * 1000, error, payload)
        with self._lock:
            self._events.append(push)
        self._count("events_ok" if status == 200 else "events_failed")
        return push

    @property
    def event_pushes(self) -> list[EventPush]:
        """Every event POST so far."""
        with self._lock:
            return list(self._events)

    # ------------------------------------------------------------------ RPC actions

    def _call_action(self, ctx: RpcContext) -> JsonDict:
        handler = {
            "DownloadAllTypeRecording": self._download_all_type_recording,
            "DownloadRecording": self._download_recording,
            "ListRecordingsByContactId": self._list_recordings,
            "GetMonoRecording": self._get_mono_recording,
            "GetMultiChannelRecording": self._get_multi_channel_recording,
            "ListCallDetailRecords": self._list_cdrs_2017 if ctx.version == V2017 else self._list_cdrs_2020,
        }[ctx.action]
        return handler(ctx)

    @staticmethod
    def _required(ctx: RpcContext, *names: str) -> list[str]:
        missing = [n for n in names if n not in ctx.params]
        if missing:
            raise RpcError.missing(missing[0])
        return [ctx.params[n] for n in names]

    def _error_2017(self, code: str, message: str, status: int = 404) -> RpcError:
        return RpcError(status, code, message, HttpStatusCode=status, Success=False)

    def _check_2017(self, instance_id: str, *, oss: bool = True) -> None:
        if instance_id != self.instance_id:
            raise self._error_2017("NotExist.Instance", f"Call center instance '{instance_id}' does not exist")
        if oss and not self.oss_open:
            raise self._error_2017("OssNotOpen", f"Call center instance '{instance_id}' does not open oss")

    def _is_ready(self, call: CccCall) -> bool:
        return call.recorded and self.now() >= call.ready_at

    def _ready_call(self, contact_id: str) -> CccCall | None:
        with self._lock:
            call = self._calls.get(contact_id)
        return call if call is not None and self._is_ready(call) else None

    def _signature_url(self, f: CccFile, action: str) -> str:
        url = self.oss.sign_url(f.bucket, f.key, self._expires(self.url_ttl_s, action))
        left, right = QUOTE_STYLES[self.quote_style]
        return f"{left}{url}{right}"

    def _download_all_type_recording(self, ctx: RpcContext) -> JsonDict:
        contact_id, instance_id = self._required(ctx, "ContactId", "InstanceId")
        self._check_2017(instance_id)
        call = self._ready_call(contact_id)
        if call is None:
            raise self._error_2017("NotExist.Record", f"Record '{contact_id}' does not exist")
        params = [{"SignatureUrl": self._signature_url(f, ctx.action), "FileName": f.file_name} for f in call.files]
        return {
            "HttpStatusCode": 200,
            "RequestId": ctx.request_id,
            "MediaDownloadParamList": {"MediaDownloadParam": params},
            "Success": True,
            "Code": "OK",
        }

    def _download_recording(self, ctx: RpcContext) -> JsonDict:
        instance_id, file_name = self._required(ctx, "InstanceId", "FileName")
        self._check_2017(instance_id)
        with self._lock:
            found = self._by_file.get(file_name)
        if found is None or found[1].bucket != _BUCKET_2017 or not self._is_ready(found[0]):
            raise self._error_2017("NotExist.Record", f"Record '{file_name}' does not exist")
        f = found[1]
        return {
            "HttpStatusCode": 200,
            "RequestId": ctx.request_id,
            "MediaDownloadParam": {"SignatureUrl": self._signature_url(f, ctx.action), "FileName": f.file_name},
            "Success": True,
            "Code": "OK",
        }

    def _recordings_2017(self, call: CccCall) -> list[JsonDict]:
        """``Recording`` entries of a call: its merged legs, once ready (none before, none unrecorded)."""
        if not self._is_ready(call):
            return []
        recordings: list[JsonDict] = []
        offset = 0.0
        for f in call.files:
            if f.kind != "merged":
                continue
            recordings.append(
                {
                    "ContactId": call.contact_id,
                    "ContactType": call.call_type,
                    "FileName": f.file_name,
                    "FileDescription": "",
                    "Duration": round(f.duration_s),
                    "StartTime": _ms(call.start + offset),
                    "AgentId": call.agent_id,
                    "AgentName": _agent_name(call),
                    "CallingNumber": call.caller,
                    "CalledNumber": call.callee,
                    "Channel": "AUDIO",
                    "InstanceId": call.instance_id,
                }
            )
            offset += f.duration_s
        return recordings

    def _list_recordings(self, ctx: RpcContext) -> JsonDict:
        contact_id, instance_id = self._required(ctx, "ContactId", "InstanceId")
        self._check_2017(instance_id)
        with self._lock:
            call = self._calls.get(contact_id)
        return {
            "HttpStatusCode": 200,
            "RequestId": ctx.request_id,
            "Recordings": {"Recording": [] if call is None else self._recordings_2017(call)},
            "Success": True,
            "Code": "OK",
        }

    def _v2_error(self, status: int, code: str, message: str) -> RpcError:
        return RpcError(status, code, message, HttpStatusCode=status)

    def _v2_instance(self, ctx: RpcContext, *names: str) -> list[str]:
        """Required ``InstanceId`` plus ``names``: none blank, and the instance must be ours."""
        values = self._required(ctx, "InstanceId", *names)
        for name, value in zip(("InstanceId", *names), values, strict=True):
            if not value.strip():
                raise self._v2_error(400, "Parameter.Blank", f"The parameter {name} may not be null or blank.")
        if values[0] != self.instance_id:
            raise self._v2_error(404, "NotExists.InstanceId", f"The specified instance {values[0]} does not exist.")
        return values

    def _v2_lookup(self, ctx: RpcContext) -> CccCall | None:
        _, contact_id = self._v2_instance(ctx, "ContactId")
        call = self._ready_call(contact_id)
        if call is None and self.not_ready_style == "error":
            raise self._v2_error(404, "NotExists.Recording", f"The recording of contact {contact_id} does not exist.")
        return call

    def _v2_reply(self, ctx: RpcContext, data: JsonDict | None) -> JsonDict:
        return {"Code": "OK", "HttpStatusCode": 200, "Message": "无", "RequestId": ctx.request_id, "Data": data}

    def _get_mono_recording(self, ctx: RpcContext) -> JsonDict:
        ttl = self.v2_url_ttl_s
        if "ExpireSeconds" in ctx.params:
            try:
                ttl = float(int(ctx.params["ExpireSeconds"]))
            except ValueError:
                raise RpcError.invalid("ExpireSeconds") from None
            if ttl < 1:
                raise self._v2_error(
                    400, "Parameter.Minimum", "The parameter ExpireSeconds must be greater than or equal to 1."
                )
        call = self._v2_lookup(ctx)
        if call is None:
            return self._v2_reply(ctx, None)
        f = call.mono
        url = self.oss.sign_url(f.bucket, f.key, self._expires(ttl, ctx.action))
        return self._v2_reply(ctx, {"FileUrl": url, "FileName": f.file_name, "Duration": round(f.duration_s * 1000)})

    def _get_multi_channel_recording(self, ctx: RpcContext) -> JsonDict:
        call = self._v2_lookup(ctx)
        if call is None:
            return self._v2_reply(ctx, None)
        f = call.multi_channel
        url = self.oss.sign_url(f.bucket, f.key, self._expires(self.v2_url_ttl_s, ctx.action))
        return self._v2_reply(ctx, {"FileUrl": url, "FileName": f.file_name})

    # ------------------------------------------------------------------ ListCallDetailRecords

    def _integers(
        self, ctx: RpcContext, defaults: Mapping[str, int | None], bad_format: Callable[[str], RpcError]
    ) -> dict[str, int]:
        """Integer parameters, ``defaults[name]`` when absent (required ones are checked before)."""
        values: dict[str, int] = {}
        for name, default in defaults.items():
            raw = ctx.params.get(name)
            if raw is None and default is not None:
                values[name] = default
            elif raw is not None and _INTEGER.fullmatch(raw):
                values[name] = int(raw)
            else:
                raise bad_format(name)
        return values

    def _default_window(self) -> tuple[int, int]:
        """Today 00:00 in the instance's time zone (UTC+8) .. now, in epoch ms."""
        now = self.now()
        midnight = dt.datetime.fromtimestamp(now, _BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
        return _ms(midnight.timestamp()), _ms(now)

    def _calls_started(self, start_ms: int, end_ms: int, *, newest_first: bool = True) -> list[CccCall]:
        """Calls whose start lies in ``[start_ms, end_ms]``; equal starts: the later placed is newer."""
        with self._lock:
            calls = [c for c in self._calls.values() if start_ms <= _ms(c.start) <= end_ms]
        if newest_first:
            return sorted(reversed(calls), key=lambda c: _ms(c.start), reverse=True)
        return sorted(calls, key=lambda c: _ms(c.start))

    def _list_cdrs_2017(self, ctx: RpcContext) -> JsonDict:
        instance_id, _, _ = self._required(ctx, "InstanceId", "PageNumber", "PageSize")
        start_ms, stop_ms = self._default_window()
        args = self._integers(
            ctx,
            {"PageNumber": None, "PageSize": None, "StartTime": start_ms, "StopTime": stop_ms},
            RpcError.invalid,
        )
        number, size = args["PageNumber"], args["PageSize"]
        start_ms, stop_ms = args["StartTime"], args["StopTime"]
        # PageNumber <= 5000 is in the SDK metadata; PageSize <= 100 and the 7-day window are not
        # documented (kept as the stricter reading), nor is the code: InvalidParameter is inferred.
        for name, value, top in (("PageNumber", number, 5000), ("PageSize", size, 100)):
            if not 1 <= value <= top:
                raise self._error_2017("InvalidParameter", f"The parameter {name} must be in [1, {top}].", 400)
        if stop_ms - start_ms > _MAX_WINDOW_2017_MS:
            raise self._error_2017(
                "InvalidParameter", "The time range between StartTime and StopTime may not exceed 7 days.", 400
            )
        self._check_2017(instance_id, oss=False)
        p = ctx.params
        phone = p.get("PhoneNumber")
        criteria = p.get("Criteria")
        calls = [
            c
            for c in self._calls_started(start_ms, stop_ms)
            if p.get("ContactId") in (None, c.contact_id)
            and p.get("ContactType") in (None, c.call_type)
            and p.get("ContactDisposition") in (None, _DISPOSITION)
            and phone in (None, c.caller, c.callee)
            and (criteria is None or criteria in c.caller or criteria in c.callee)
            and (p.get("WithRecording", "false").lower() != "true" or self._is_ready(c))
        ]
        page = calls[(number - 1) * size : number * size]
        return {
            "HttpStatusCode": 200,
            "RequestId": ctx.request_id,
            "CallDetailRecords": {
                "TotalCount": len(calls),
                "PageNumber": number,
                "PageSize": size,
                "List": {"CallDetailRecord": [self._cdr_2017(c) for c in page]},
            },
            "Success": True,
            "Code": "OK",
        }

    def _cdr_2017(self, call: CccCall) -> JsonDict:
        return {
            "ContactId": call.contact_id,
            "InstanceId": call.instance_id,
            "StartTime": _ms(call.start),
            "Duration": round(call.duration_s),
            "ContactType": call.call_type,
            "ContactDisposition": _DISPOSITION,
            "CallingNumber": call.caller,
            "CalledNumber": call.callee,
            "AgentNames": _agent_name(call),
            "SkillGroupNames": "",
            "Agents": {"CallDetailAgent": [{"AgentId": call.agent_id, "AgentName": _agent_name(call)}]},
            "Recordings": {"Recording": self._recordings_2017(call)},
        }

    def _list_cdrs_2020(self, ctx: RpcContext) -> JsonDict:
        self._required(ctx, "InstanceId", "PageNumber", "PageSize")
        start_ms, end_ms = self._default_window()

        def bad_format(name: str) -> RpcError:
            return self._v2_error(400, "Parameter.Format", f"The format of parameter {name} is invalid.")

        args = self._integers(
            ctx, {"PageNumber": None, "PageSize": None, "StartTime": start_ms, "EndTime": end_ms}, bad_format
        )
        number, size = args["PageNumber"], args["PageSize"]
        for name, value in (("PageNumber", number), ("PageSize", size)):
            if not 1 <= value <= 100:  # documented: 1-100 for both; the code is inferred
                raise self._v2_error(400, "Parameter.Invalid", f"The parameter {name} is invalid. It must be 1-100.")
        self._v2_instance(ctx)
        p = ctx.params
        sort_order = p.get("SortOrder", "DESC").upper()
        if sort_order not in ("ASC", "DESC"):
            raise self._v2_error(400, "Parameter.Invalid", "The parameter SortOrder is invalid. ASC or DESC.")
        if "ContactId" in p:  # documented: a ContactId makes every other filter ignored
            with self._lock:
                found = self._calls.get(p["ContactId"])
            calls = [] if found is None else [found]
        else:
            part = _criteria_phone(p.get("Criteria"), bad_format)
            calls = [
                c
                for c in self._calls_started(args["StartTime"], args["EndTime"], newest_first=sort_order == "DESC")
                if p.get("CallingNumber") in (None, c.caller)
                and p.get("CalledNumber") in (None, c.callee)
                and p.get("ContactType") in (None, _V2_CONTACT_TYPES.get(c.call_type, c.call_type))
                and p.get("ContactDisposition") in (None, _DISPOSITION)
                and p.get("AgentId") in (None, c.agent_id)
                and (part is None or part in c.caller or part in c.callee)
            ]
        page = calls[(number - 1) * size : number * size]
        return self._v2_reply(
            ctx,
            {
                # Documented: filled on the first page only, 0 on the others.
                "TotalCount": len(calls) if number == 1 else 0,
                "PageNumber": number,
                "PageSize": size,
                "List": [self._cdr_2020(c) for c in page],
            },
        )

    def _cdr_2020(self, call: CccCall) -> JsonDict:
        seconds = round(call.duration_s)
        return {
            "ContactId": call.contact_id,
            "InstanceId": call.instance_id,
            "ContactType": _V2_CONTACT_TYPES.get(call.call_type, call.call_type),
            "ContactDisposition": _DISPOSITION,
            "CallingNumber": call.caller,
            "CalledNumber": call.callee,
            "AgentIds": call.agent_id,
            "AgentNames": _agent_name(call),
            "StartTime": _ms(call.start),
            "EstablishedTime": _ms(call.start),
            "ReleaseTime": _ms(call.end),
            "CallDuration": str(seconds),
            "TalkTime": seconds,
            "RecordingDuration": seconds if call.recorded else 0,
            "RecordingReady": self._is_ready(call),
        }


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def _agent_name(call: CccCall) -> str:
    return call.agent_id.split("@")[0]


def _criteria_phone(criteria: str | None, bad_format: Callable[[str], RpcError]) -> str | None:
    """2020 ``Criteria``: a JSON object whose only field is ``phoneNumber`` (part of either number)."""
    if criteria is None:
        return None
    try:
        value = json.loads(criteria)
    except ValueError:
        raise bad_format("Criteria") from None
    if not isinstance(value, dict) or set(value) != {"phoneNumber"} or not isinstance(value["phoneNumber"], str):
        raise bad_format("Criteria")
    return value["phoneNumber"]
