"""Tests for the Alibaba Cloud simulators (CCC, Dyplsapi, OSS file server), over real HTTP.

Requests are signed with the vendor's own signer from ``aliyun-python-sdk-core`` (an oracle
independent of both the simulator and the project's client), with its Timestamp pinned to the
simulator's clock so ``advance_time`` does not make requests stale.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from aliyunsdkcore.auth.composer import rpc_signature_composer
from aliyunsdkcore.utils import parameter_helper

from local.simulators.aliyun.gateway import AccessKey
from local.simulators.aliyun.signature import compute_signature, iso_utc
from local.simulators.ccc import CccCall, CccSimulator
from local.simulators.dypls import DyplsCall, DyplsSimulator
from local.simulators.wav import wav_info
from tests.conftest import eventually

KEY_ID = "LTAI5tUnitTestKey0000001"
SECRET = "unit-test-secret"
CREDS = {KEY_ID: SECRET}
V2017, V2020, VDYPLS = "2017-07-05", "2020-07-01", "2017-05-25"
DAY = 86400.0


# --------------------------------------------------------------------------- helpers


def sdk_signed_query(
    method: str,
    params: dict[str, str],
    *,
    timestamp: str,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    fmt: str = "JSON",
    body: dict[str, str] | None = None,
) -> str:
    """``/?...`` signed by the vendor SDK, with the Timestamp we choose."""
    with mock.patch.object(parameter_helper, "get_iso_8061_date", return_value=timestamp):
        url, _ = rpc_signature_composer.get_signed_url(dict(params), key_id, secret, fmt, method, body or {})
    return str(url)


def rpc(
    sim: CccSimulator | DyplsSimulator,
    action: str,
    version: str,
    *,
    method: str = "GET",
    fmt: str = "JSON",
    skew_s: float = 0.0,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    **params: Any,
) -> requests.Response:
    """Call ``action``: GET with everything in the query, or POST with business params in the form body."""
    common = {"Action": action, "Version": version}
    stamp = iso_utc(sim.now() + skew_s)
    if method == "GET":
        path = sdk_signed_query("GET", {**common, **params}, timestamp=stamp, key_id=key_id, secret=secret, fmt=fmt)
        return requests.get(sim.base_url + path, timeout=10)
    path = sdk_signed_query("POST", common, timestamp=stamp, key_id=key_id, secret=secret, fmt=fmt, body=params)
    return requests.post(sim.base_url + path, data=params, timeout=10)


def with_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced (after signing: tampering)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def unquote_url(wrapped: str) -> str:
    """What a client does with the documented quote-wrapped ``SignatureUrl``."""
    return wrapped.strip("\"“”' ")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xml_error(resp: requests.Response) -> dict[str, str]:
    root = ET.fromstring(resp.content)  # noqa: S314 - the reply of our own loopback simulator
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def frozen_clock() -> Callable[[], float]:
    """A clock that moves only by ``advance_time``: expiry checks must not depend on how fast
    the machine runs the test (a link valid one day is checked one second before the day is up)."""
    start = float(int(time.time()))
    return lambda: start


@pytest.fixture
def ccc() -> Iterator[CccSimulator]:
    with CccSimulator(instance_id="ccc-unit", credentials=CREDS, not_ready_seconds=0, clock=frozen_clock()) as sim:
        yield sim


@pytest.fixture
def dypls() -> Iterator[DyplsSimulator]:
    with DyplsSimulator(credentials=CREDS, pool_keys={"FC123456"}, not_ready_seconds=0, clock=frozen_clock()) as sim:
        yield sim


def all_files(ccc: CccSimulator, call: CccCall) -> requests.Response:
    return rpc(ccc, "DownloadAllTypeRecording", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)


def query_dypls(sim: DyplsSimulator, call: DyplsCall, **overrides: str) -> dict[str, Any]:
    params: dict[str, Any] = {"CallId": call.call_id, "CallTime": call.call_time_text, "PoolKey": call.pool_key}
    params.update(overrides)
    resp = rpc(sim, "QueryRecordFileDownloadUrl", VDYPLS, **params)
    assert resp.status_code == 200, resp.text  # Dyplsapi's business errors come with HTTP 200
    body: dict[str, Any] = resp.json()
    return body


class Receiver:
    """A local HTTP endpoint answering scripted ``(status, body, delay_s)`` replies, then 200 OK."""

    def __init__(self, script: list[tuple[int, bytes, float]] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(json.loads(data.decode("utf-8")))
                owner.headers.append(dict(self.headers))
                status, body, delay = owner.script.pop(0) if owner.script else (200, b'{"code":0,"msg":"ok"}', 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/receipts?token=t0k"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------- signature gateway


def test_signature_matches_documented_vector() -> None:
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert compute_signature("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sdk_signed_request_is_accepted_with_awkward_values(ccc: CccSimulator, method: str) -> None:
    # Spaces, '*', '~', '+', '/' and Chinese are where home-made percent-encoders go wrong.
    odd = "录音 a*b~c+d/e=f&g.wav"
    resp = rpc(ccc, "DownloadRecording", V2017, method=method, InstanceId=ccc.instance_id, FileName=odd)
    assert resp.status_code == 404, resp.text  # past the gateway: the product looked the file up
    assert resp.json()["Code"] == "NotExist.Record"
    assert odd in resp.json()["Message"]


def test_xml_is_the_default_format_and_json_on_request(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    stamp = iso_utc(ccc.now())
    params = {"Action": "DownloadAllTypeRecording", "Version": V2017, "ContactId": call.contact_id}
    params["InstanceId"] = ccc.instance_id
    path = sdk_signed_query("GET", params, timestamp=stamp, fmt=None)  # type: ignore[arg-type]
    resp = requests.get(ccc.base_url + path, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(resp.content)  # noqa: S314 - the reply of our own loopback simulator
    assert root.tag == "DownloadAllTypeRecordingResponse"
    names = [e.findtext("FileName") for e in root.iter("MediaDownloadParam")]
    assert names == list(call.file_names)


def test_tampered_request_is_rejected_with_the_servers_string_to_sign(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    params = {"Action": "DownloadAllTypeRecording", "Version": V2017}
    params |= {"ContactId": call.contact_id, "InstanceId": ccc.instance_id}
    path = sdk_signed_query("GET", params, timestamp=iso_utc(ccc.now()))
    resp = requests.get(with_query(ccc.base_url + path, ContactId="someone-else"), timeout=5)
    assert resp.status_code == 400
    body = resp.json()
    assert body["Code"] == "SignatureDoesNotMatch"
    assert body["Message"].startswith(
        "Specified signature is not matched with our calculation. server string to sign is:GET&%2F&"
    )
    assert "someone-else" in body["Message"]
    assert set(body) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}

    wrong_secret = all_files_with(ccc, call, secret="not-the-secret")
    assert (wrong_secret.status_code, wrong_secret.json()["Code"]) == (400, "SignatureDoesNotMatch")
    # A GET-signed query sent as POST is a different string to sign.
    assert requests.post(ccc.base_url + path, timeout=5).json()["Code"] in ("SignatureDoesNotMatch",)


def all_files_with(ccc: CccSimulator, call: CccCall, **kwargs: Any) -> requests.Response:
    return rpc(ccc, "DownloadAllTypeRecording", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id, **kwargs)


def test_reused_nonce_is_rejected_even_after_a_fault(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    params = {"Action": "DownloadAllTypeRecording", "Version": V2017}
    params |= {"ContactId": call.contact_id, "InstanceId": ccc.instance_id}
    path = sdk_signed_query("GET", params, timestamp=iso_utc(ccc.now()))
    ccc.set_fault("error_5xx", status=503)
    first = requests.get(ccc.base_url + path, timeout=5)
    assert (first.status_code, first.json()["Code"]) == (503, "ServiceUnavailable")
    again = requests.get(ccc.base_url + path, timeout=5)  # a lazy retry re-sends the same signed URL
    assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")
    assert all_files(ccc, call).status_code == 200  # a fresh signature (fresh nonce) works


def test_stale_or_malformed_timestamp_is_rejected(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    for skew in (-16 * 60, 16 * 60):
        resp = all_files_with(ccc, call, skew_s=skew)
        assert (resp.status_code, resp.json()["Code"]) == (400, "InvalidTimeStamp.Expired")
    assert all_files_with(ccc, call, skew_s=-14 * 60).status_code == 200

    # Signed a while ago, sent after the simulator's clock moved on.
    params = {"Action": "DownloadAllTypeRecording", "Version": V2017}
    params |= {"ContactId": call.contact_id, "InstanceId": ccc.instance_id}
    path = sdk_signed_query("GET", params, timestamp=iso_utc(ccc.now()))
    ccc.advance_time(901)
    assert requests.get(ccc.base_url + path, timeout=5).json()["Code"] == "InvalidTimeStamp.Expired"

    path = sdk_signed_query("GET", params, timestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    resp = requests.get(ccc.base_url + path, timeout=5)
    assert (resp.status_code, resp.json()["Code"]) == (400, "InvalidTimeStamp.Format")


def test_wall_clock_timestamps_can_be_checked_against_the_wall_clock() -> None:
    with CccSimulator(credentials=CREDS, not_ready_seconds=0, timestamp_clock=time.time) as sim:
        call = sim.place_call(duration_s=2)
        sim.advance_time(2 * DAY)  # fast-forward the recordings, not the clients' clocks
        assert all_files_with(sim, call, skew_s=-2 * DAY).status_code == 200


def hand_signed(sim: CccSimulator, params: dict[str, str], secret: str = SECRET) -> requests.Response:
    """A request built without the SDK, to send what the SDK never would."""
    signed = dict(params)
    signed["Signature"] = compute_signature("GET", params, secret)
    return requests.get(f"{sim.base_url}/?{urlencode(signed)}", timeout=5)


def common(sim: CccSimulator, **overrides: str) -> dict[str, str]:
    params = {
        "Action": "DownloadAllTypeRecording",
        "Version": V2017,
        "Format": "JSON",
        "AccessKeyId": KEY_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": f"nonce-{time.perf_counter_ns()}",
        "Timestamp": iso_utc(sim.now()),
        "ContactId": "1",
        "InstanceId": sim.instance_id,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != "<drop>"}


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"AccessKeyId": "LTAI-unknown"}, 404, "InvalidAccessKeyId.NotFound"),
        ({"SignatureNonce": "<drop>"}, 400, "MissingSignatureNonce"),
        ({"Timestamp": "<drop>"}, 400, "MissingTimestamp"),
        ({"SignatureVersion": "<drop>"}, 400, "MissingSignatureVersion"),
        ({"SignatureMethod": "HMAC-SHA256"}, 400, "InvalidSignatureMethod"),
        ({"Version": "2019-01-01"}, 400, "InvalidVersion"),
        ({"Action": "DownloadEverything"}, 404, "InvalidAction.NotFound"),
        ({"Action": "GetMonoRecording"}, 404, "InvalidAction.NotFound"),  # exists in 2020-07-01 only
        ({"Format": "YAML"}, 400, "InvalidParameter.Format"),
        ({"ContactId": "<drop>"}, 400, "MissingContactId"),
    ],
)
def test_gateway_rejections(ccc: CccSimulator, overrides: dict[str, str], status: int, code: str) -> None:
    resp = hand_signed(ccc, common(ccc, **overrides))
    assert (resp.status_code, resp.json()["Code"]) == (status, code), resp.text
    assert ccc.counters[f"error:{code}"] >= 1


def test_sts_credentials_need_their_security_token() -> None:
    creds = {"STS.NUnitTest": AccessKey("sts-secret", security_token="token-abc")}
    with CccSimulator(credentials=creds, not_ready_seconds=0) as sim:
        call = sim.place_call(duration_s=2)

        def send(**extra: str) -> requests.Response:
            return all_files_with(sim, call, key_id="STS.NUnitTest", secret="sts-secret", **extra)

        assert send().json()["Code"] == "MissingSecurityToken"
        assert send(SecurityToken="token-xyz").json()["Code"] == "InvalidSecurityToken.MismatchWithAccessKey"
        assert send(SecurityToken="token-abc").status_code == 200
        sim.expire_security_token("STS.NUnitTest")
        assert send(SecurityToken="token-abc").json()["Code"] == "InvalidSecurityToken.Expired"
        assert all(("SecurityToken", "token-abc") not in e.params for e in sim.request_log)


# --------------------------------------------------------------------------- CCC 2017-07-05


def test_transferred_call_lists_every_file_with_quoted_urls_that_download_exact_bytes(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=6)
    assert len(call.files) == 3  # one dual-track .mkv + one merged .wav per leg
    resp = all_files(ccc, call)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["Code"], body["Success"], body["HttpStatusCode"]) == ("OK", True, 200)
    params = body["MediaDownloadParamList"]["MediaDownloadParam"]
    assert [p["FileName"] for p in params] == list(call.file_names)
    assert params[0]["FileName"].endswith(".mkv") and all(p["FileName"].endswith(".wav") for p in params[1:])
    for p, f in zip(params, call.files, strict=True):
        assert p["SignatureUrl"].startswith('""http://') and p["SignatureUrl"].endswith('""')
        url = unquote_url(p["SignatureUrl"])
        assert {"Expires", "OSSAccessKeyId", "Signature"} <= dict(parse_qsl(urlsplit(url).query)).keys()
        got = requests.get(url, timeout=10)
        assert got.status_code == 200
        assert sha256(got.content) == f.sha256 == sha256(ccc.file_bytes(f))
        assert int(got.headers["Content-Length"]) == f.size
        assert got.headers["ETag"].startswith('"')
        if f.kind == "dual_track":
            assert got.headers["Content-Type"] == "video/x-matroska"
            assert got.content[:4] == bytes.fromhex("1A45DFA3")  # EBML magic
        else:
            assert got.headers["Content-Type"] == "audio/x-wav"
            assert wav_info(got.content)[3] == pytest.approx(3.0)  # 6 s over two legs


def test_signature_url_expires_after_an_hour(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    url = unquote_url(all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"][1]["SignatureUrl"])
    ccc.advance_time(3599)
    assert requests.get(url, timeout=5).status_code == 200
    ccc.advance_time(2)
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 403
    assert resp.headers["Content-Type"] == "application/xml"
    err = xml_error(resp)
    assert (err["Code"], err["Message"]) == ("AccessDenied", "Request has expired.")
    assert {"RequestId", "HostId", "Expires", "ServerTime"} <= err.keys()
    assert ccc.oss.counters["expired"] == 1


def test_recording_is_not_exist_until_ready(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=2, duration_s=3, ready_after_s=120)
    for resp in (
        all_files(ccc, call),
        rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=call.files[1].file_name),
    ):
        assert (resp.status_code, resp.json()["Code"]) == (404, "NotExist.Record")
    listed = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert listed.json()["Recordings"]["Recording"] == []
    ccc.advance_time(121)
    assert len(all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"]) == 4
    one = rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=call.files[2].file_name)
    param = one.json()["MediaDownloadParam"]
    assert param["FileName"] == call.files[2].file_name
    assert sha256(requests.get(unquote_url(param["SignatureUrl"]), timeout=5).content) == call.files[2].sha256
    listed = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert [r["FileName"] for r in listed.json()["Recordings"]["Recording"]] == list(call.file_names[1:])


def test_other_instance_and_oss_not_open() -> None:
    with CccSimulator(instance_id="inst-a", credentials=CREDS, not_ready_seconds=0, oss_open=False) as sim:
        call = sim.place_call(duration_s=2)
        other = rpc(sim, "DownloadAllTypeRecording", V2017, ContactId=call.contact_id, InstanceId="inst-b")
        assert (other.status_code, other.json()["Code"]) == (404, "NotExist.Instance")
        closed = all_files(sim, call)
        assert (closed.status_code, closed.json()["Code"]) == (404, "OssNotOpen")


@pytest.mark.parametrize(("style", "left"), [("typographic", "“”http"), ("ascii_single", '"http'), ("none", "http")])
def test_quote_styles(style: str, left: str) -> None:
    with CccSimulator(credentials=CREDS, not_ready_seconds=0, quote_style=style) as sim:
        call = sim.place_call(duration_s=2)
        wrapped = all_files(sim, call).json()["MediaDownloadParamList"]["MediaDownloadParam"][0]["SignatureUrl"]
        assert wrapped.startswith(left)
        assert requests.get(unquote_url(wrapped), timeout=5).status_code == 200


def test_ccc_gateway_faults(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    ccc.set_fault("throttle")
    resp = all_files(ccc, call)
    assert (resp.status_code, resp.json()["Code"]) == (400, "Throttling.User")
    ccc.set_fault("throttle", status=503)
    assert (all_files(ccc, call).status_code, all_files(ccc, call).status_code) == (503, 200)
    ccc.set_fault("error_5xx", status=502, action="DownloadAllTypeRecording")
    page = all_files(ccc, call)
    assert page.status_code == 502 and page.headers["Content-Type"] == "text/html"
    ccc.set_fault("expire_url")
    params = all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"]
    first, second = (requests.get(unquote_url(p["SignatureUrl"]), timeout=5) for p in params)
    assert first.status_code == 403 and xml_error(first)["Message"] == "Request has expired."
    assert second.status_code == 200  # only the next URL issued was already expired
    counters = ccc.counters
    assert counters["fault:throttle"] == 2 and counters["fault:error_5xx"] == 1 and counters["fault:expire_url"] == 1
    assert counters["action:DownloadAllTypeRecording"] == 5
    assert ccc.faults_pending() == {}


# --------------------------------------------------------------------------- OSS file server


def test_oss_rejects_bad_signatures_unknown_keys_and_head_with_a_get_url(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=2)
    url = unquote_url(all_files(ccc, call).json()["MediaDownloadParamList"]["MediaDownloadParam"][1]["SignatureUrl"])
    bad = requests.get(with_query(url, Signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="), timeout=5)
    assert (bad.status_code, xml_error(bad)["Code"]) == (403, "SignatureDoesNotMatch")
    missing = requests.get(url.replace(call.files[1].file_name, "nope.wav"), timeout=5)
    assert (missing.status_code, xml_error(missing)["Code"]) == (403, "SignatureDoesNotMatch")  # key is signed
    unsigned = requests.get(url.split("?")[0], timeout=5)
    assert (unsigned.status_code, xml_error(unsigned)["Code"]) == (403, "AccessDenied")
    assert requests.head(url, timeout=5).status_code == 403  # the verb is part of the signature
    f = call.files[1]
    gone = ccc.oss.presign(f.bucket, f.key + ".bak", 60)
    resp = requests.get(gone, timeout=5)
    assert (resp.status_code, xml_error(resp)["Code"]) == (404, "NoSuchKey")
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert part.status_code == 206 and part.content == ccc.file_bytes(f)[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{f.size}"
    signature = dict(parse_qsl(urlsplit(url).query))["Signature"]
    assert ccc.oss.request_log and all(signature not in repr(e) for e in ccc.oss.request_log)


def test_oss_faults_truncate_5xx_and_slow(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=4)
    f = call.files[1]
    url = ccc.oss.presign(f.bucket, f.key, 600)
    ccc.oss.set_fault("truncate", fraction=0.25)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, timeout=5).raise_for_status()
    ccc.oss.set_fault("error_5xx", status=503, key_suffix=".wav")
    resp = requests.get(url, timeout=5)
    assert (resp.status_code, xml_error(resp)["Code"]) == (503, "ServiceUnavailable")
    ccc.oss.set_fault("slow", seconds=0.3)
    t0 = time.monotonic()
    assert sha256(requests.get(url, timeout=5).content) == f.sha256
    assert time.monotonic() - t0 >= 0.3
    assert eventually(lambda: "downloads_ok" in ccc.oss.counters)
    counters = ccc.oss.counters
    assert counters["downloads_truncated"] == 1 and counters["fault:error_5xx"] == 1 and counters["downloads_ok"] == 1


# --------------------------------------------------------------------------- CCC 2020-07-01


def test_get_mono_and_multi_channel_recording(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=5, contact_id="job-6538214103689000", ready_after_s=30)
    early = rpc(ccc, "GetMonoRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
    assert (early.status_code, early.json()["Code"]) == (404, "NotExists.Recording")
    ccc.advance_time(31)

    mono = rpc(ccc, "GetMonoRecording", V2020, method="POST", InstanceId=ccc.instance_id, ContactId=call.contact_id)
    body = mono.json()
    assert (body["Code"], body["HttpStatusCode"], body["Message"]) == ("OK", 200, "无")
    assert body["Data"]["FileName"] == "job-6538214103689000.wav"
    assert body["Data"]["Duration"] == 5000
    got = requests.get(body["Data"]["FileUrl"], timeout=5)
    assert sha256(got.content) == call.mono.sha256 and wav_info(got.content)[1] == 1

    multi = rpc(ccc, "GetMultiChannelRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
    data = multi.json()["Data"]
    assert data["FileName"].endswith(".mkv") and "Duration" not in data
    assert sha256(requests.get(data["FileUrl"], timeout=5).content) == call.multi_channel.sha256

    ccc.advance_time(DAY - 1)
    assert requests.get(data["FileUrl"], timeout=5).status_code == 200  # valid one day
    ccc.advance_time(2)
    assert requests.get(data["FileUrl"], timeout=5).status_code == 403

    short = rpc(
        ccc, "GetMonoRecording", V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id, ExpireSeconds="300"
    )
    url = short.json()["Data"]["FileUrl"]
    ccc.advance_time(301)
    assert requests.get(url, timeout=5).status_code == 403


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"InstanceId": "ccc-unit"}, 400, "MissingContactId"),
        ({"InstanceId": "ccc-unit", "ContactId": " "}, 400, "Parameter.Blank"),
        ({"InstanceId": "other", "ContactId": "job-1"}, 404, "NotExists.InstanceId"),
        ({"InstanceId": "ccc-unit", "ContactId": "job-1", "ExpireSeconds": "0"}, 400, "Parameter.Minimum"),
    ],
)
def test_v2_errors(ccc: CccSimulator, params: dict[str, Any], status: int, code: str) -> None:
    resp = rpc(ccc, "GetMonoRecording", V2020, **params)
    assert (resp.status_code, resp.json()["Code"]) == (status, code)


def test_v2_not_ready_can_answer_ok_without_data() -> None:
    with CccSimulator(credentials=CREDS, not_ready_seconds=60, not_ready_style="empty") as sim:
        call = sim.place_call(duration_s=2)
        body = rpc(sim, "GetMultiChannelRecording", V2020, InstanceId=sim.instance_id, ContactId=call.contact_id)
        assert body.status_code == 200 and body.json()["Code"] == "OK" and body.json()["Data"] is None


def test_events_are_posted_like_the_subscription(ccc: CccSimulator, receiver: Receiver) -> None:
    call = ccc.place_call(duration_s=3)
    for event_type, f in (("RecordingReady", call.mono), ("DualTrackRecordingReady", call.multi_channel)):
        push = ccc.push_event(call, event_type, url=receiver.url, headers={"X-Webhook-Token": "t0k"})
        assert push.status == 200 and push.error is None
        event = receiver.bodies[-1]
        assert event["eventType"] == event_type
        assert (event["contactId"], event["instanceId"]) == (call.contact_id, ccc.instance_id)
        assert event["eventTime"].endswith("Z") and event["fileName"] == f.file_name
        assert sha256(requests.get(event["downloadURL"], timeout=5).content) == f.sha256
        assert receiver.headers[-1]["X-Webhook-Token"] == "t0k"
    ccc.push_event(call, "CDRReady", url=receiver.url)
    assert receiver.bodies[-1]["eventType"] == "CDRReady"
    assert [p.event_type for p in ccc.event_pushes] == ["RecordingReady", "DualTrackRecordingReady", "CDRReady"]
    soft = ccc.softphone_event(call)
    assert soft["contactId"] == call.contact_id and soft["instanceId"] == ccc.instance_id


# --------------------------------------------------------------------------- CCC ListCallDetailRecords

END_TIME = {V2017: "StopTime", V2020: "EndTime"}
BOTH = pytest.mark.parametrize("version", [V2017, V2020])


def ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def list_cdrs(
    sim: CccSimulator, version: str, start_ms: int | None = None, end_ms: int | None = None, **params: Any
) -> requests.Response:
    """ListCallDetailRecords of ``sim``'s instance; page 1 of 100 unless ``PageNumber``/``PageSize`` say otherwise."""
    args = {"InstanceId": sim.instance_id, "PageNumber": "1", "PageSize": "100"}
    if start_ms is not None:
        args["StartTime"] = str(start_ms)
    if end_ms is not None:
        args[END_TIME[version]] = str(end_ms)
    return rpc(sim, "ListCallDetailRecords", version, **(args | params))


def listed(resp: requests.Response, version: str) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    records: list[dict[str, Any]] = (
        body["CallDetailRecords"]["List"]["CallDetailRecord"] if version == V2017 else body["Data"]["List"]
    )
    return records


def test_cdrs_2017_reply_lists_the_merged_legs_download_recording_accepts(ccc: CccSimulator) -> None:
    call = ccc.place_call(transferred_legs=1, duration_s=30, caller="13800000001", callee="057100000002")
    body = list_cdrs(ccc, V2017, ms(call.start) - 1000, ms(call.end)).json()
    assert (body["Code"], body["Success"], body["HttpStatusCode"]) == ("OK", True, 200) and body["RequestId"]
    page = body["CallDetailRecords"]
    assert (page["TotalCount"], page["PageNumber"], page["PageSize"]) == (1, 1, 100)
    (record,) = page["List"]["CallDetailRecord"]
    assert record["ContactId"] == call.contact_id and record["InstanceId"] == ccc.instance_id
    assert (record["StartTime"], record["Duration"]) == (ms(call.start), 30)
    assert (record["CallingNumber"], record["CalledNumber"]) == ("13800000001", "057100000002")
    assert (record["ContactType"], record["ContactDisposition"]) == (call.call_type, "Success")
    assert [a["AgentId"] for a in record["Agents"]["CallDetailAgent"]] == [call.agent_id]
    recordings = record["Recordings"]["Recording"]
    assert [r["FileName"] for r in recordings] == list(call.file_names[1:])  # the .wav legs, not the .mkv
    assert [r["StartTime"] for r in recordings] == [ms(call.start), ms(call.start + 15)]
    assert all(r["ContactId"] == call.contact_id and r["Duration"] == 15 for r in recordings)
    one = rpc(ccc, "DownloadRecording", V2017, InstanceId=ccc.instance_id, FileName=recordings[1]["FileName"])
    url = unquote_url(one.json()["MediaDownloadParam"]["SignatureUrl"])
    assert sha256(requests.get(url, timeout=5).content) == call.files[2].sha256


def test_cdrs_2020_reply_has_data_list_with_recording_ready(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=30, caller="13800000001", callee="057100000002")
    body = list_cdrs(ccc, V2020, ms(call.start), ms(call.end), method="POST").json()
    assert (body["Code"], body["HttpStatusCode"], body["Message"]) == ("OK", 200, "无") and body["RequestId"]
    data = body["Data"]
    assert (data["TotalCount"], data["PageNumber"], data["PageSize"]) == (1, 1, 100)
    (record,) = data["List"]  # a plain array in 2020-07-01, not {"CallDetailRecord": [...]}
    assert record["ContactId"] == call.contact_id and record["InstanceId"] == ccc.instance_id
    assert (record["StartTime"], record["ReleaseTime"]) == (ms(call.start), ms(call.end))
    assert record["CallDuration"] == "30"  # a string of seconds, as in the SDK models
    assert (record["RecordingDuration"], record["RecordingReady"]) == (30, True)
    assert (record["CallingNumber"], record["CalledNumber"]) == ("13800000001", "057100000002")
    assert (record["ContactType"], record["ContactDisposition"], record["AgentIds"]) == (
        "Inbound",
        "Success",
        call.agent_id,
    )


@BOTH
def test_cdrs_are_the_calls_started_inside_the_window_newest_first(ccc: CccSimulator, version: str) -> None:
    first = ccc.place_call(duration_s=10)
    ccc.advance_time(100)
    middle = ccc.place_call(duration_s=10)
    ccc.advance_time(100)
    last = ccc.place_call(duration_s=10)

    def ids(start_ms: int, end_ms: int) -> list[str]:
        return [r["ContactId"] for r in listed(list_cdrs(ccc, version, start_ms, end_ms), version)]

    everything = [last.contact_id, middle.contact_id, first.contact_id]
    assert ids(ms(first.start), ms(last.start)) == everything  # both ends inclusive
    assert ids(ms(middle.start), ms(middle.start)) == [middle.contact_id]
    assert ids(ms(first.start) + 1, ms(last.start) - 1) == [middle.contact_id]
    assert ids(ms(first.end), ms(middle.start) - 1) == []  # the end of a call does not count, its start does


@BOTH
def test_cdrs_page_through_five_calls_two_at_a_time(ccc: CccSimulator, version: str) -> None:
    calls = []
    for _ in range(5):
        calls.append(ccc.place_call(duration_s=5))
        ccc.advance_time(10)
    window = (ms(calls[0].start), ms(calls[-1].start))
    pages = [list_cdrs(ccc, version, *window, PageNumber=str(n), PageSize="2") for n in (1, 2, 3, 4)]
    assert [len(listed(p, version)) for p in pages] == [2, 2, 1, 0]
    seen = [r["ContactId"] for p in pages for r in listed(p, version)]
    assert seen == [c.contact_id for c in reversed(calls)]
    if version == V2017:
        totals = [p.json()["CallDetailRecords"]["TotalCount"] for p in pages]
        assert totals == [5, 5, 5, 5]
    else:  # documented: TotalCount is only filled on the first page
        totals = [p.json()["Data"]["TotalCount"] for p in pages]
        assert totals == [5, 0, 0, 0]
        assert [p.json()["Data"]["PageNumber"] for p in pages] == [1, 2, 3, 4]


@BOTH
@pytest.mark.parametrize(("name", "value"), [("PageSize", "101"), ("PageSize", "0"), ("PageNumber", "0")])
def test_cdr_page_size_and_number_outside_their_range_are_refused(
    ccc: CccSimulator, version: str, name: str, value: str
) -> None:
    call = ccc.place_call(duration_s=5)
    resp = list_cdrs(ccc, version, ms(call.start), ms(call.end), **{name: value})
    expected = "InvalidParameter" if version == V2017 else "Parameter.Invalid"
    assert (resp.status_code, resp.json()["Code"]) == (400, expected), resp.text
    assert resp.json()["HttpStatusCode"] == 400
    assert len(listed(list_cdrs(ccc, version, ms(call.start), ms(call.end), PageSize="100"), version)) == 1


def test_cdr_2017_window_of_more_than_seven_days_is_refused(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=5)
    week = ms(7 * DAY)
    assert len(listed(list_cdrs(ccc, V2017, ms(call.end) - week, ms(call.end)), V2017)) == 1
    resp = list_cdrs(ccc, V2017, ms(call.end) - week - 1, ms(call.end))
    body = resp.json()
    assert (resp.status_code, body["Code"], body["Success"]) == (400, "InvalidParameter", False)
    assert "7 days" in body["Message"]


@BOTH
@pytest.mark.parametrize("missing", ["InstanceId", "PageNumber", "PageSize"])
def test_cdr_required_parameters_are_required(ccc: CccSimulator, version: str, missing: str) -> None:
    params = {"InstanceId": ccc.instance_id, "PageNumber": "1", "PageSize": "10"}
    del params[missing]
    resp = rpc(ccc, "ListCallDetailRecords", version, **params)
    assert (resp.status_code, resp.json()["Code"]) == (400, f"Missing{missing}")


@BOTH
def test_cdr_other_instance_and_non_integer_times_are_refused(ccc: CccSimulator, version: str) -> None:
    other = list_cdrs(ccc, version, InstanceId="someone-else")
    expected = "NotExist.Instance" if version == V2017 else "NotExists.InstanceId"
    assert (other.status_code, other.json()["Code"]) == (404, expected)
    for name in ("StartTime", END_TIME[version], "PageSize"):
        resp = list_cdrs(ccc, version, **{name: "2024-05-01T00:00:00Z"})
        expected = f"Invalid{name}" if version == V2017 else "Parameter.Format"
        assert (resp.status_code, resp.json()["Code"]) == (400, expected), name
    assert list_cdrs(ccc, version, StartTime="1.7e12").status_code == 400


def test_unrecorded_call_is_listed_without_recordings_and_cannot_be_downloaded(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=20, recorded=False)
    ccc.advance_time(DAY)
    assert call.files == () and not call.recorded
    window = (ms(call.start), ms(call.end))
    (old,) = listed(list_cdrs(ccc, V2017, *window), V2017)
    assert old["ContactId"] == call.contact_id and old["Recordings"]["Recording"] == []
    (new,) = listed(list_cdrs(ccc, V2020, *window), V2020)
    assert new["ContactId"] == call.contact_id
    assert (new["RecordingReady"], new["RecordingDuration"], new["CallDuration"]) == (False, 0, "20")
    with_recording = list_cdrs(ccc, V2017, *window, WithRecording="true")
    assert listed(with_recording, V2017) == []

    assert (all_files(ccc, call).status_code, all_files(ccc, call).json()["Code"]) == (404, "NotExist.Record")
    by_contact = rpc(ccc, "ListRecordingsByContactId", V2017, ContactId=call.contact_id, InstanceId=ccc.instance_id)
    assert by_contact.json()["Recordings"]["Recording"] == []
    for action in ("GetMonoRecording", "GetMultiChannelRecording"):
        resp = rpc(ccc, action, V2020, InstanceId=ccc.instance_id, ContactId=call.contact_id)
        assert (resp.status_code, resp.json()["Code"]) == (404, "NotExists.Recording")
    with pytest.raises(ValueError, match="not recorded"):
        ccc.event_payload(call, "RecordingReady")


def test_recording_ready_turns_true_at_ready_at(ccc: CccSimulator) -> None:
    call = ccc.place_call(duration_s=10, ready_after_s=60)
    window = (ms(call.start), ms(call.end))

    def ready_2020() -> bool:
        (record,) = listed(list_cdrs(ccc, V2020, *window), V2020)
        return bool(record["RecordingReady"])

    def recordings_2017() -> list[str]:
        (record,) = listed(list_cdrs(ccc, V2017, *window), V2017)
        return [r["FileName"] for r in record["Recordings"]["Recording"]]

    assert (ready_2020(), recordings_2017()) == (False, [])
    ccc.advance_time(59)
    assert (ready_2020(), recordings_2017()) == (False, [])
    ccc.advance_time(1)
    assert (ready_2020(), recordings_2017()) == (True, list(call.file_names[1:]))


def test_cdrs_2020_filters_and_contact_id_overriding_them(ccc: CccSimulator) -> None:
    a = ccc.place_call(duration_s=5, caller="13811110000")
    ccc.advance_time(10)
    b = ccc.place_call(duration_s=5, caller="13822220000", call_type="OUTBOUND")
    window = (ms(a.start), ms(b.start))

    def ids(**params: str) -> list[str]:
        return [r["ContactId"] for r in listed(list_cdrs(ccc, V2020, *window, **params), V2020)]

    assert ids() == [b.contact_id, a.contact_id]
    assert ids(SortOrder="ASC") == [a.contact_id, b.contact_id]
    assert ids(CallingNumber="13811110000") == [a.contact_id]
    assert ids(ContactType="Outbound") == [b.contact_id]
    assert ids(Criteria=json.dumps({"phoneNumber": "2222"})) == [b.contact_id]
    # A ContactId ignores every other filter, the window included.
    outside = list_cdrs(ccc, V2020, 0, 1, ContactId=a.contact_id, CallingNumber="nobody")
    assert [r["ContactId"] for r in listed(outside, V2020)] == [a.contact_id]


def test_cdr_window_defaults_to_today_in_utc8_until_now() -> None:
    t0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, i.e. 06:13:20 on the 15th in Beijing
    with CccSimulator(instance_id="ccc-unit", credentials=CREDS, not_ready_seconds=0, clock=lambda: t0) as sim:
        call = sim.place_call(duration_s=30)
        for version in (V2017, V2020):
            assert [r["ContactId"] for r in listed(list_cdrs(sim, version), version)] == [call.contact_id]
        sim.advance_time(18 * 3600)  # 00:13:20 on the 16th in Beijing: yesterday's call is out of today
        for version in (V2017, V2020):
            assert listed(list_cdrs(sim, version), version) == []
            assert len(listed(list_cdrs(sim, version, ms(call.start), ms(sim.now())), version)) == 1


# --------------------------------------------------------------------------- Dyplsapi


def test_query_record_file_download_url(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=60)
    body = query_dypls(dypls, call, ProductType="AXB_170")
    assert (body["Code"], body["Message"]) == ("OK", "OK") and body["RequestId"]
    resp = requests.get(body["DownloadUrl"], timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "audio/mpeg"
    assert sha256(resp.content) == call.sha256 and resp.content[:2] == b"\xff\xf3"  # an MPEG audio frame
    assert 200_000 < call.size < 300_000  # a minute of telephone-quality MP3
    dypls.advance_time(7201)  # valid two hours
    assert xml_error(requests.get(body["DownloadUrl"], timeout=5))["Message"] == "Request has expired."


def test_dypls_business_errors_come_with_http_200(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=10)
    dypls.set_fault("flow_limit")
    assert query_dypls(dypls, call)["Code"] == "isv.FLOW_LIMIT"
    assert query_dypls(dypls, call)["Code"] == "OK"
    dypls.set_fault("system_error")
    assert query_dypls(dypls, call)["Code"] == "isp.SYSTEM_ERROR"
    dypls.set_fault("business_error", code="isp.GATEWAY_ERROR")
    assert query_dypls(dypls, call)["Code"] == "isp.GATEWAY_ERROR"
    assert query_dypls(dypls, call, PoolKey="FC999999")["Code"] == "isv.POOLKEY_NOT_EXISTS"
    utc_time = dt.datetime.fromtimestamp(call.call_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert query_dypls(dypls, call, CallTime=utc_time)["Code"] == "isv.INVALID_PARAMETERS"  # not Beijing time
    assert query_dypls(dypls, call, CallTime=str(call.call_time))["Code"] == "isv.INVALID_PARAMETERS"
    assert query_dypls(dypls, call, CallId="0" * 16)["Code"] == "isv.RECORD_NOT_EXIST"
    assert dypls.counters["error:isv.FLOW_LIMIT"] == 1
    missing = rpc(dypls, "QueryRecordFileDownloadUrl", VDYPLS, PoolKey="FC123456")
    assert (missing.status_code, missing.json()["Code"]) == (400, "MissingCallId")


def test_dypls_can_answer_with_a_download_url_a_client_must_not_trust(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=10)
    dypls.set_fault("download_url", url="http://169.254.169.254/latest/meta-data/")
    assert query_dypls(dypls, call)["DownloadUrl"] == "http://169.254.169.254/latest/meta-data/"
    assert query_dypls(dypls, call)["DownloadUrl"].startswith(dypls.oss.base_url)


def test_dypls_not_ready_unrecorded_and_too_old(dypls: DyplsSimulator) -> None:
    fresh = dypls.place_call(duration_s=5, ready_after_s=900)
    body = query_dypls(dypls, fresh)
    assert body["Code"] == "isv.RECORD_NOT_EXIST" and "DownloadUrl" not in body
    silent = dypls.place_call(duration_s=5, recorded=False)
    old = dypls.place_call(duration_s=5, ended_at=dypls.now() - 31 * DAY)
    dypls.advance_time(901)
    assert query_dypls(dypls, fresh)["Code"] == "OK"
    assert query_dypls(dypls, silent)["Code"] == "isv.RECORD_NOT_EXIST"
    expired = query_dypls(dypls, old)
    assert expired["Code"] == "isv.RECORD_NOT_EXIST" and expired["Message"] == "录音文件已过期"


def test_receipt_records(dypls: DyplsSimulator) -> None:
    call = dypls.place_call(duration_s=30, ready_after_s=600)
    report = dypls.secret_report(call)
    assert {"pool_key", "sub_id", "call_id", "phone_no", "secret_no", "peer_no", "call_type", "call_time"} <= set(
        report
    )
    assert {"start_time", "release_time", "release_dir", "release_cause", "record_url"} <= set(report)
    assert report["call_time"] == call.call_time_text
    assert requests.get(report["record_url"], timeout=5).status_code == 404  # handed out before the file exists
    dypls.advance_time(601)
    assert sha256(requests.get(report["record_url"], timeout=5).content) == call.sha256
    http_rec, mns_rec = dypls.secret_recording(call), dypls.secret_recording(call, "mns")
    assert http_rec == {
        "pool_key": call.pool_key,
        "sub_id": call.sub_id,
        "call_id": call.call_id,
        "call_time": call.call_time,
        "out_id": call.out_id,
    }
    assert "subs_id" in mns_rec and "sub_id" not in mns_rec
    assert isinstance(http_rec["call_time"], int) and http_rec["call_time"] % 1000 == 0


def test_receipts_are_pushed_as_a_json_array_and_resent_until_acknowledged(dypls: DyplsSimulator) -> None:
    slow_ok = (200, '{"code":0,"msg":"接收成功"}'.encode(), 0.9)
    receiver = Receiver([(500, b"oops", 0.0), slow_ok, (200, b"<html>ok</html>", 0.0)])
    try:
        call = dypls.place_call(duration_s=10)
        records = [dypls.secret_report(call), dypls.secret_recording(call)]
        first = dypls.push_receipts(receiver.url, records)
        assert (first.attempt, first.status, first.ok) == (1, 500, False)
        assert receiver.bodies[0] == records  # one POST, a JSON array of records
        assert dypls.deliver_due_resends() == []  # due one minute later
        dypls.advance_time(60)
        (second,) = dypls.deliver_due_resends()
        # Too slow: the platform stops waiting after 700 ms (and the receiver takes 900).
        assert (second.attempt, second.status, second.ok) == (2, None, False)
        assert second.latency_ms >= 700 and "timed out" in (second.error or "")
        dypls.advance_time(300)
        (third,) = dypls.deliver_due_resends()
        assert (third.status, third.ok) == (200, False)  # no numeric "code" in the answer
        dypls.advance_time(599)
        assert dypls.deliver_due_resends() == []
        dypls.advance_time(1)
        (fourth,) = dypls.deliver_due_resends()
        assert (fourth.attempt, fourth.ok) == (4, True)
        assert receiver.bodies == [records] * 4 and dypls.pending_resends == {}
        assert [a.attempt for a in dypls.receipt_attempts] == [1, 2, 3, 4]
        assert all(a.latency_ms > 0 for a in dypls.receipt_attempts)
    finally:
        receiver.close()


def test_receipts_are_dropped_after_three_resends(dypls: DyplsSimulator) -> None:
    receiver = Receiver([(503, b"", 0.0)] * 10)
    try:
        call = dypls.place_call(duration_s=5)
        dypls.push_receipts(receiver.url, [dypls.secret_recording(call)])
        for wait in (60, 300, 600):
            dypls.advance_time(wait)
            dypls.deliver_due_resends()
        assert len(receiver.bodies) == 4 and dypls.pending_resends == {}
        assert dypls.counters["receipts_dropped"] == 1
    finally:
        receiver.close()


def test_request_log_keeps_no_secrets() -> None:
    # An access key of this test alone: the simulator's port is a freed ephemeral port, which any
    # process on the machine may still address (with this module's KEY_ID, too), so the log is
    # read for this key only.
    key_id, secret = f"LTAI{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    with DyplsSimulator(credentials={key_id: secret}, pool_keys={"FC123456"}, not_ready_seconds=0) as sim:
        call = sim.place_call(duration_s=5)
        params = {"CallId": call.call_id, "CallTime": call.call_time_text, "PoolKey": call.pool_key}
        reply = rpc(sim, "QueryRecordFileDownloadUrl", VDYPLS, key_id=key_id, secret=secret, **params)
        (entry,) = [e for e in sim.request_log if e.access_key_id == key_id]
    assert reply.json()["Code"] == "OK"
    assert entry.action == "QueryRecordFileDownloadUrl" and entry.status == 200 and entry.code == "OK"
    assert all(name not in ("Signature", "SecurityToken") for name, _ in entry.params)
    assert secret not in repr(entry)
