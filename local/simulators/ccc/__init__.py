"""Strict simulator of Alibaba Cloud Call Center (CCC) recording APIs, 2017-07-05 and 2020-07-01.

A real RPC server on loopback behind the verifying gateway of :mod:`local.simulators.aliyun.gateway`,
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

**ListCallDetailRecords** (both versions) lists the calls: :mod:`local.simulators.ccc.cdr`.
``place_call(recorded=False)`` makes a call that is listed without recordings and that every
download action answers like a recording that is not ready.

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
import time
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from local.simulators.aliyun.gateway import AccessKey, AliyunRpcSimulator, JsonDict, RpcContext, RpcError
from local.simulators.aliyun.signature import iso_utc
from local.simulators.ccc.calls import BEIJING, V2017, V2020, CccCall, CccFile, EventPush, recordings_2017
from local.simulators.ccc.cdr import list_cdrs_2017, list_cdrs_2020
from local.simulators.ccc.replies import (
    check_instance_2017,
    error_2017,
    reply_2017,
    required,
    v2_error,
    v2_instance,
    v2_reply,
)
from local.simulators.mkv import matroska_audio
from local.simulators.oss import OssSimulator, content_type_for
from local.simulators.push import post
from local.simulators.wav import make_wav

__all__ = ["QUOTE_STYLES", "CccCall", "CccFile", "CccSimulator", "EventPush", "matroska_audio"]

#: How ``SignatureUrl`` is wrapped (the docs show both ASCII and typographic quotes).
QUOTE_STYLES: Mapping[str, tuple[str, str]] = {
    "ascii": ('""', '""'),
    "ascii_single": ('"', '"'),
    "typographic": ("“”", "“”"),
    "none": ("", ""),
}
EVENT_TYPES = ("RecordingReady", "DualTrackRecordingReady", "CDRReady")
_BUCKET_2017 = "cloudcallcenter-online"
_BUCKET_2020 = "ccc-v2-online"


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
        self.oss = oss if oss is not None else OssSimulator(host=host, clock=self.now)
        if oss is None:
            self._serve_alongside(self.oss)
        self._calls: dict[str, CccCall] = {}
        self._by_file: dict[str, tuple[CccCall, CccFile]] = {}
        self._events: list[EventPush] = []
        self._seq = 80333360
        self._rng = random.Random(seed)

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
        local = dt.datetime.fromtimestamp(start, BEIJING)
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
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        sent = post(url, body, {"Content-Type": "application/json;charset=UTF-8", **dict(headers or {})}, timeout_s)
        push = EventPush(url, event_type, call.contact_id, sent.status, sent.latency_s * 1000, sent.error, payload)
        with self._lock:
            self._events.append(push)
        self._count("events_ok" if sent.status == 200 else "events_failed")
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
            "ListCallDetailRecords": self._list_call_detail_records,
        }[ctx.action]
        return handler(ctx)

    def _list_call_detail_records(self, ctx: RpcContext) -> JsonDict:
        return list_cdrs_2017(self, ctx) if ctx.version == V2017 else list_cdrs_2020(self, ctx)

    def _check_2017(self, instance_id: str) -> None:
        check_instance_2017(instance_id, self.instance_id)
        if not self.oss_open:
            raise error_2017("OssNotOpen", f"Call center instance '{instance_id}' does not open oss")

    def _ready_call(self, contact_id: str) -> CccCall | None:
        with self._lock:
            call = self._calls.get(contact_id)
        return call if call is not None and call.is_ready(self.now()) else None

    def _signature_url(self, f: CccFile, action: str) -> str:
        url = self.oss.sign_url(f.bucket, f.key, self._expires(self.url_ttl_s, action))
        left, right = QUOTE_STYLES[self.quote_style]
        return f"{left}{url}{right}"

    def _download_all_type_recording(self, ctx: RpcContext) -> JsonDict:
        contact_id, instance_id = required(ctx, "ContactId", "InstanceId")
        self._check_2017(instance_id)
        call = self._ready_call(contact_id)
        if call is None:
            raise error_2017("NotExist.Record", f"Record '{contact_id}' does not exist")
        params = [{"SignatureUrl": self._signature_url(f, ctx.action), "FileName": f.file_name} for f in call.files]
        return reply_2017(ctx, {"MediaDownloadParamList": {"MediaDownloadParam": params}})

    def _download_recording(self, ctx: RpcContext) -> JsonDict:
        instance_id, file_name = required(ctx, "InstanceId", "FileName")
        self._check_2017(instance_id)
        with self._lock:
            found = self._by_file.get(file_name)
        if found is None or found[1].bucket != _BUCKET_2017 or not found[0].is_ready(self.now()):
            raise error_2017("NotExist.Record", f"Record '{file_name}' does not exist")
        f = found[1]
        param = {"SignatureUrl": self._signature_url(f, ctx.action), "FileName": f.file_name}
        return reply_2017(ctx, {"MediaDownloadParam": param})

    def _list_recordings(self, ctx: RpcContext) -> JsonDict:
        contact_id, instance_id = required(ctx, "ContactId", "InstanceId")
        self._check_2017(instance_id)
        with self._lock:
            call = self._calls.get(contact_id)
        recordings = [] if call is None else recordings_2017(call, self.now())
        return reply_2017(ctx, {"Recordings": {"Recording": recordings}})

    def _v2_lookup(self, ctx: RpcContext) -> CccCall | None:
        _, contact_id = v2_instance(ctx, self.instance_id, "ContactId")
        call = self._ready_call(contact_id)
        if call is None and self.not_ready_style == "error":
            raise v2_error(404, "NotExists.Recording", f"The recording of contact {contact_id} does not exist.")
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
                raise v2_error(
                    400, "Parameter.Minimum", "The parameter ExpireSeconds must be greater than or equal to 1."
                )
        call = self._v2_lookup(ctx)
        if call is None:
            return v2_reply(ctx, None)
        f = call.mono
        url = self.oss.sign_url(f.bucket, f.key, self._expires(ttl, ctx.action))
        return v2_reply(ctx, {"FileUrl": url, "FileName": f.file_name, "Duration": round(f.duration_s * 1000)})

    def _get_multi_channel_recording(self, ctx: RpcContext) -> JsonDict:
        call = self._v2_lookup(ctx)
        if call is None:
            return v2_reply(ctx, None)
        f = call.multi_channel
        url = self.oss.sign_url(f.bucket, f.key, self._expires(self.v2_url_ttl_s, ctx.action))
        return v2_reply(ctx, {"FileUrl": url, "FileName": f.file_name})
