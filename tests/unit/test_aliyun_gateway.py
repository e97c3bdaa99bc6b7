"""Tests for what the Alibaba Cloud simulators share, over real HTTP: the RPC signature gateway
(signatures, nonces, timestamps, STS tokens, formats, rejections) and the OSS file server behind
their download URLs (its own signatures, ranges and faults).

The CCC simulator stands in for the product behind the gateway. Requests are signed with the
vendor's own signer (see tests/aliyun_requests.py).
"""

from __future__ import annotations

import datetime as dt
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from local.simulators.aliyun.gateway import AccessKey
from local.simulators.aliyun.signature import compute_signature, iso_utc
from local.simulators.ccc import CccCall, CccSimulator
from tests.aliyun_requests import (
    CREDS,
    DAY,
    KEY_ID,
    SECRET,
    V2017,
    all_files,
    rpc,
    sdk_signed_query,
    sha256,
    unit_ccc,
    unquote_url,
    xml_error,
)
from tests.conftest import eventually


def with_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced (after signing: tampering)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def ccc() -> Iterator[CccSimulator]:
    with unit_ccc() as sim:
        yield sim


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
