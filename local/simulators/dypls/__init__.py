"""Strict simulator of Alibaba number privacy protection (Dyplsapi 2017-05-25) recordings.

A real RPC server on loopback behind the verifying gateway of :mod:`local.simulators.aliyun.gateway`,
with an OSS-style file server (:mod:`local.simulators.oss`) for the MP3 download URLs.

``QueryRecordFileDownloadUrl(CallId, CallTime 'yyyy-MM-dd HH:mm:ss' Beijing time, PoolKey,
ProductType?)`` answers ``{"Code": "OK", "Message": "OK", "RequestId", "DownloadUrl"}`` with a
URL valid two hours.  Business errors come **with HTTP 200** in ``Code`` (seed 002, the
vendor's error list):

* ``isv.INVALID_PARAMETERS`` - PoolKey or CallTime missing, CallTime not ``yyyy-MM-dd
  HH:mm:ss``, or CallTime not the call's dial time (Beijing, ``call_time_tolerance_s``);
* ``isv.POOLKEY_NOT_EXISTS`` - PoolKey not configured;
* ``isv.RECORD_NOT_EXIST`` (``not_ready_code``) - unknown call, call of another pool, call
  not recorded, recording not generated yet (the docs say 15-20 minutes after hang-up), with
  the message telling which; the vendor documents no code for these, so a client must treat
  any unknown ``isv.`` code on a young call as "try later".  ``not_ready_style="empty_url"``
  instead answers ``OK`` without ``DownloadUrl`` while the file is being generated;
* the same code with message "录音文件已过期" for calls older than ``retention_days``;
* faults: ``flow_limit`` (``isv.FLOW_LIMIT``), ``system_error`` (``isp.SYSTEM_ERROR``),
  ``business_error`` (any ``code``/``message``), ``download_url`` (a ready recording's
  ``DownloadUrl`` is ``url`` instead of a signed link: a reply a client must not trust), plus
  the gateway's ``throttle``, ``error_5xx`` and ``expire_url``.

Receipts (:meth:`DyplsSimulator.push_receipts`): one POST whose body is a JSON **array** of
records; the push counts as delivered only on HTTP 200 within ``ack_timeout_s`` (700 ms)
with a JSON body whose ``code`` is a number (``{"code":0,"msg":"接收成功"}``); otherwise it is
re-sent 1, 5 and 10 minutes (simulated time) after each failure, then dropped.  Nothing
re-sends by itself: call :meth:`DyplsSimulator.deliver_due_resends` after ``advance_time``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from local.simulators.aliyun.gateway import AccessKey, AliyunRpcSimulator, JsonDict, RpcContext, RpcError
from local.simulators.oss import OssSimulator
from local.simulators.push import post

__all__ = ["BEIJING", "DyplsCall", "DyplsSimulator", "ReceiptAttempt", "make_mp3"]

V2017 = "2017-05-25"
#: Dyplsapi times ('yyyy-MM-dd HH:mm:ss') are Beijing time; China has no DST, so a fixed offset is exact.
BEIJING = dt.timezone(dt.timedelta(hours=8))
_TIME_FMT = "%Y-%m-%d %H:%M:%S"
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_BUCKET = "secret-axb-record-files"
_DAY = 86400.0
# MPEG-2 Layer III, 32 kbit/s, 16 kHz, mono, no CRC: 576 samples (144 bytes) a frame.
_MP3_HEADER = bytes.fromhex("FFF348C4")
_MP3_FRAME = 144
_MP3_SIDE_INFO = bytes(9)  # part2_3_length 0: decoders play silence, ancillary bytes follow
_MESSAGES = {
    "isv.FLOW_LIMIT": "业务流控",
    "isp.SYSTEM_ERROR": "系统错误",
    "isv.INVALID_PARAMETERS": "参数格式不正确",
    "isv.POOLKEY_NOT_EXISTS": "号池不存在",
}


def make_mp3(duration_s: float, *, seed: str) -> bytes:
    """A valid MP3 stream of silent frames (with seeded ancillary bytes): ~4 kB per second."""
    frames = max(1, round(duration_s * 16000 / 576))
    filler = random.Random(f"mp3:{seed}").randbytes(frames * (_MP3_FRAME - 13))
    out = bytearray()
    step = _MP3_FRAME - 13
    for i in range(frames):
        out += _MP3_HEADER + _MP3_SIDE_INFO + filler[i * step : (i + 1) * step]
    return bytes(out)


def beijing_time(epoch: float) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time, as Dyplsapi writes and expects times."""
    return dt.datetime.fromtimestamp(epoch, BEIJING).strftime(_TIME_FMT)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DyplsCall:
    """A finished call placed with :meth:`DyplsSimulator.place_call`.

    ``call_time`` is the dial time in epoch **milliseconds** (as in SecretRecording);
    ``start_time`` (answer) and ``release_time`` (hang-up) are epoch seconds.
    """

    call_id: str
    pool_key: str
    sub_id: int
    phone_no: str
    secret_no: str
    peer_no: str
    call_type: int
    out_id: str
    call_time: int
    start_time: float
    release_time: float
    duration_s: float
    recorded: bool
    ready_at: float
    release_dir: int
    release_cause: int
    key: str | None
    size: int
    sha256: str | None
    mp3: bytes = field(repr=False)

    @property
    def call_time_text(self) -> str:
        """The ``CallTime`` QueryRecordFileDownloadUrl expects (Beijing time)."""
        return beijing_time(self.call_time / 1000)


@dataclass(frozen=True)
class ReceiptAttempt:
    """One POST of a receipt batch.  ``ok`` means acknowledged in time; ``status`` None = no answer."""

    batch_id: str
    url: str
    attempt: int
    at: float
    status: int | None
    latency_ms: float
    ok: bool
    error: str | None
    records: int


@dataclass
class _Batch:
    batch_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    records: int
    attempts: int = 0
    next_due: float | None = None


# --------------------------------------------------------------------------- simulator


class DyplsSimulator(AliyunRpcSimulator):
    """Dyplsapi recording download API with simulated calls, receipt pushes and faults."""

    PRODUCT: ClassVar[str] = "Dyplsapi"
    HOST_ID: ClassVar[str] = "dyplsapi.aliyuncs.com"
    ACTIONS: ClassVar[Mapping[str, frozenset[str]]] = {V2017: frozenset({"QueryRecordFileDownloadUrl"})}
    FAULT_KINDS: ClassVar[tuple[str, ...]] = (
        *AliyunRpcSimulator.FAULT_KINDS,
        "flow_limit",
        "system_error",
        "business_error",
        "download_url",
    )
    FAULT_PARAMS: ClassVar[Mapping[str, frozenset[str]]] = {
        **AliyunRpcSimulator.FAULT_PARAMS,
        "flow_limit": frozenset({"action"}),
        "system_error": frozenset({"action"}),
        "business_error": frozenset({"code", "message", "action"}),
        "download_url": frozenset({"url", "action"}),
    }
    THREAD_NAME: ClassVar[str] = "dypls-sim"

    def __init__(
        self,
        *,
        credentials: Mapping[str, str | AccessKey] | None = None,
        pool_keys: Iterable[str] = ("FC123456",),
        retention_days: float = 30.0,
        not_ready_seconds: float = 900.0,
        not_ready_code: str = "isv.RECORD_NOT_EXIST",
        not_ready_style: str = "code",
        url_ttl_s: float = 7200.0,
        report_url_ttl_s: float = 30 * _DAY,
        call_time_tolerance_s: float = 1.0,
        ack_timeout_s: float = 0.7,
        resend_delays_s: Iterable[float] = (60.0, 300.0, 600.0),
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        oss: OssSimulator | None = None,
        timestamp_clock: Callable[[], float] | None = None,
        seed: int | str | None = None,
    ) -> None:
        """Configure; nothing listens until :meth:`start` (which also starts the file server).

        ``not_ready_seconds`` (default 15 minutes, the docs' "15-20 minutes") is how long
        after hang-up the MP3 appears.  ``retention_days``: recordings of older calls are
        gone (the seed says 14 days, newer docs 30).  ``seed`` makes call ids repeatable; by
        default they differ per run, so a restarted local stack never reuses ids.
        """
        super().__init__(
            credentials=credentials,
            api_versions=(V2017,),
            host=host,
            port=port,
            clock=clock,
            timestamp_clock=timestamp_clock,
        )
        if not_ready_style not in ("code", "empty_url"):
            raise ValueError("not_ready_style must be 'code' or 'empty_url'")
        self.pool_keys = frozenset(pool_keys)
        if not self.pool_keys:
            raise ValueError("pool_keys must not be empty")
        self.retention_days = float(retention_days)
        self.not_ready_seconds = float(not_ready_seconds)
        self.not_ready_code = not_ready_code
        self.not_ready_style = not_ready_style
        self.url_ttl_s = float(url_ttl_s)
        self.report_url_ttl_s = float(report_url_ttl_s)
        self.call_time_tolerance_s = float(call_time_tolerance_s)
        self.ack_timeout_s = float(ack_timeout_s)
        self.resend_delays_s = tuple(float(d) for d in resend_delays_s)
        self.oss = oss if oss is not None else OssSimulator(host=host, clock=self.now)
        if oss is None:
            self._serve_alongside(self.oss)
        self._calls: dict[str, DyplsCall] = {}
        self._batches: dict[str, _Batch] = {}
        self._attempts: list[ReceiptAttempt] = []
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ calls

    @property
    def calls(self) -> list[DyplsCall]:
        """Calls placed so far."""
        with self._lock:
            return list(self._calls.values())

    def place_call(
        self,
        *,
        duration_s: float = 60.0,
        recorded: bool = True,
        ready_after_s: float | None = None,
        pool_key: str | None = None,
        ring_s: float = 5.0,
        call_type: int = 0,
        phone_no: str | None = None,
        peer_no: str | None = None,
        out_id: str | None = None,
        ended_at: float | None = None,
    ) -> DyplsCall:
        """Simulate a call that hung up at ``ended_at`` (default: now).

        The MP3 (if ``recorded``) becomes downloadable ``ready_after_s`` after hang-up.
        """
        if duration_s < 0 or ring_s < 0:
            raise ValueError("durations must be >= 0")
        pool = pool_key or sorted(self.pool_keys)[0]
        with self._lock:
            rng = self._rng
            call_id = f"{rng.getrandbits(64):016x}"
            sub_id = 1000043068030000 + rng.randrange(10000)
            phone = phone_no or f"138{rng.randrange(10**8):08d}"
            secret = f"170{rng.randrange(10**8):08d}"
            peer = peer_no or f"152{rng.randrange(10**8):08d}"
            oid = out_id if out_id is not None else str(rng.randrange(10**12))
            release = self.now() if ended_at is None else float(ended_at)
        start = float(int(release - duration_s))  # the platform keeps whole seconds
        call_time = int(start - ring_s)
        ready_at = release + (self.not_ready_seconds if ready_after_s is None else float(ready_after_s))
        mp3 = b""
        key: str | None = None
        if recorded:
            mp3 = make_mp3(duration_s, seed=call_id)
            key = f"{sub_id}_{call_id}{call_time}.mp3"
            self.oss.put_object(_BUCKET, key, mp3, available_at=ready_at)
        call = DyplsCall(
            call_id=call_id,
            pool_key=pool,
            sub_id=sub_id,
            phone_no=phone,
            secret_no=secret,
            peer_no=peer,
            call_type=call_type,
            out_id=oid,
            call_time=call_time * 1000,
            start_time=start,
            release_time=start + duration_s,
            duration_s=duration_s,
            recorded=recorded,
            ready_at=ready_at,
            release_dir=1,
            release_cause=16,
            key=key,
            size=len(mp3),
            sha256=hashlib.sha256(mp3).hexdigest() if recorded else None,
            mp3=mp3,
        )
        with self._lock:
            self._calls[call_id] = call
        return call

    # ------------------------------------------------------------------ receipts

    def secret_report(self, call: DyplsCall) -> JsonDict:
        """The SecretReport (call ended) record of ``call``, as the HTTP batch push sends it."""
        dial = call.call_time / 1000
        record: JsonDict = {
            "id": int(call.call_time // 1000) * 10 + 1,
            "pool_key": call.pool_key,
            "partner_key": call.pool_key,
            "sub_id": call.sub_id,
            "call_id": call.call_id,
            "phone_no": call.phone_no,
            "secret_no": call.secret_no,
            "peer_no": call.peer_no,
            "called_display_no": call.secret_no,
            "call_type": call.call_type,
            "call_time": beijing_time(dial),
            "call_out_time": beijing_time(dial + 1),
            "ring_time": beijing_time(dial + 2),
            "free_ring_time": beijing_time(dial + 2),
            "start_time": beijing_time(call.start_time),
            "release_time": beijing_time(call.release_time),
            "release_dir": call.release_dir,
            "release_cause": call.release_cause,
            "unconnected_cause": 0,
            "control_type": "CONTINUE",
            "control_msg": "OK",
            "city": "杭州",
            "out_id": call.out_id,
        }
        if call.recorded and call.key is not None:
            # Issued at hang-up, before the file exists: it answers NoSuchKey until ready.
            record["record_url"] = self.oss.presign(_BUCKET, call.key, self.report_url_ttl_s)
        return record

    def secret_recording(self, call: DyplsCall, variant: str = "http") -> JsonDict:
        """The SecretRecording (recording ready) record; the MNS variant names ``sub_id`` ``subs_id``."""
        if variant not in ("http", "mns"):
            raise ValueError("variant must be 'http' or 'mns'")
        return {
            "pool_key": call.pool_key,
            "sub_id" if variant == "http" else "subs_id": call.sub_id,
            "call_id": call.call_id,
            "call_time": call.call_time,
            "out_id": call.out_id,
        }

    def push_receipts(
        self, url: str, records: list[JsonDict], *, headers: Mapping[str, str] | None = None
    ) -> ReceiptAttempt:
        """POST ``records`` as one JSON array to ``url`` now; failures are re-sent later."""
        if not records:
            raise ValueError("a receipt batch holds at least one record")
        batch = _Batch(
            batch_id=uuid.uuid4().hex,
            url=url,
            body=json.dumps(records, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json;charset=UTF-8", **dict(headers or {})},
            records=len(records),
        )
        with self._lock:
            self._batches[batch.batch_id] = batch
        return self._attempt(batch)

    def deliver_due_resends(self) -> list[ReceiptAttempt]:
        """Re-send every failed batch whose next attempt is due on the simulated clock."""
        now = self.now()
        with self._lock:
            due = [b for b in self._batches.values() if b.next_due is not None and b.next_due <= now]
        return [self._attempt(b) for b in sorted(due, key=lambda b: b.next_due or 0.0)]

    @property
    def pending_resends(self) -> dict[str, float]:
        """``batch_id -> simulated time of its next attempt`` for batches still to be re-sent."""
        with self._lock:
            return {b.batch_id: b.next_due for b in self._batches.values() if b.next_due is not None}

    @property
    def receipt_attempts(self) -> list[ReceiptAttempt]:
        """Every receipt POST so far, with its latency."""
        with self._lock:
            return list(self._attempts)

    def _attempt(self, batch: _Batch) -> ReceiptAttempt:
        sent = post(batch.url, batch.body, batch.headers, self.ack_timeout_s)
        status, error, latency = sent.status, sent.error, sent.latency_s
        ok = status == 200 and latency <= self.ack_timeout_s
        if status == 200 and not ok:
            error = f"acknowledged after {latency * 1000:.0f} ms (limit {self.ack_timeout_s * 1000:.0f} ms)"
        elif ok and not _numeric_code(sent.reply):
            ok, error = False, "acknowledgement without a numeric 'code'"
        with self._lock:
            batch.attempts += 1
            now = self.now()
            if ok or batch.attempts > len(self.resend_delays_s):
                batch.next_due = None
                self._batches.pop(batch.batch_id, None)
            else:
                batch.next_due = now + self.resend_delays_s[batch.attempts - 1]
            attempt = ReceiptAttempt(
                batch.batch_id, batch.url, batch.attempts, now, status, latency * 1000, ok, error, batch.records
            )
            self._attempts.append(attempt)
        self._count("receipts_ok" if ok else "receipts_failed")
        if not ok and batch.next_due is None:
            self._count("receipts_dropped")
        return attempt

    # ------------------------------------------------------------------ faults

    def _check_fault_params(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        params = super()._check_fault_params(kind, params)
        if kind == "business_error":
            params["code"] = str(params.get("code", "isp.GATEWAY_ERROR"))
            params["message"] = str(params.get("message", "调用发送应用模块失败"))
        return params

    # ------------------------------------------------------------------ RPC action

    def _call_action(self, ctx: RpcContext) -> JsonDict:
        for kind, code in (("flow_limit", "isv.FLOW_LIMIT"), ("system_error", "isp.SYSTEM_ERROR")):
            if self._action_fault(kind, ctx.action) is not None:
                return self._business(ctx, code)
        custom = self._action_fault("business_error", ctx.action)
        if custom is not None:
            return self._business(ctx, custom["code"], custom["message"])
        return self._query_record_file_download_url(ctx)

    @staticmethod
    def _business(ctx: RpcContext, code: str, message: str | None = None) -> JsonDict:
        return {"Code": code, "Message": message or _MESSAGES.get(code, code), "RequestId": ctx.request_id}

    def _query_record_file_download_url(self, ctx: RpcContext) -> JsonDict:
        call_id = ctx.params.get("CallId")
        if call_id is None:
            raise RpcError.missing("CallId")  # the only parameter the API metadata marks required
        pool_key, call_time = ctx.params.get("PoolKey", ""), ctx.params.get("CallTime", "")
        if not pool_key or not call_time or not call_id:
            return self._business(ctx, "isv.INVALID_PARAMETERS")
        if pool_key not in self.pool_keys:
            return self._business(ctx, "isv.POOLKEY_NOT_EXISTS")
        if not _TIME_RE.fullmatch(call_time):
            return self._business(ctx, "isv.INVALID_PARAMETERS", "CallTime格式不正确")
        try:
            asked = dt.datetime.strptime(call_time, _TIME_FMT).replace(tzinfo=BEIJING).timestamp()
        except ValueError:
            return self._business(ctx, "isv.INVALID_PARAMETERS", "CallTime格式不正确")
        with self._lock:
            call = self._calls.get(call_id)
        if call is None or call.pool_key != pool_key:
            return self._business(ctx, self.not_ready_code, "录音文件不存在")
        if abs(asked - call.call_time / 1000) > self.call_time_tolerance_s:
            return self._business(ctx, "isv.INVALID_PARAMETERS", "CallTime与呼叫记录不匹配")
        now = self.now()
        if now - call.call_time / 1000 > self.retention_days * _DAY:
            return self._business(ctx, self.not_ready_code, "录音文件已过期")
        if not call.recorded or call.key is None:
            return self._business(ctx, self.not_ready_code, "录音文件不存在")
        if now < call.ready_at:
            if self.not_ready_style == "empty_url":
                return {"Code": "OK", "Message": "OK", "RequestId": ctx.request_id}
            return self._business(ctx, self.not_ready_code, "录音文件尚未生成")
        url = self.oss.sign_url(_BUCKET, call.key, self._expires(self.url_ttl_s, ctx.action))
        odd = self._action_fault("download_url", ctx.action)
        if odd is not None:
            url = str(odd["url"])
        return {"Message": "OK", "RequestId": ctx.request_id, "DownloadUrl": url, "Code": "OK"}


def _numeric_code(reply: bytes) -> bool:
    """The platform only checks that the answer's ``code`` is a number."""
    try:
        body = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    code = body.get("code") if isinstance(body, dict) else None
    return isinstance(code, int | float) and not isinstance(code, bool)
