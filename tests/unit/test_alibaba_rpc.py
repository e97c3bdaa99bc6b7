"""Alibaba RPC signing, client and error classification, over real HTTP on loopback.

The local API checks every request with the vendor SDK's signer (not ours), so a client
that signs what it does not send, or sends what it does not sign, is caught here.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from aliyunsdkcore.auth.composer import rpc_signature_composer as sdk_composer

from callvault.errors import PermanentFailure, RetryKind, RetryLater
from callvault.http import HttpClients
from callvault.providers.alibaba_rpc import (
    AlibabaRpcClient,
    RpcCredentials,
    RpcError,
    classify,
    percent_encode,
    sign,
    string_to_sign,
    strip_url_quotes,
)
from tests.bystander import Bystander

sdk_string_to_sign: Callable[[str, dict[str, str]], str] = getattr(sdk_composer, "__compose_string_to_sign")
sdk_signature: Callable[[str, str], str] = getattr(sdk_composer, "__get_signature")

KEY_ID = "LTAI5tTestKeyId"
SECRET = "s3cr3t/with+chars&="
TOKEN = "CAIS-sts-token/with+slash=="
NOW = datetime(2024, 5, 1, 16, 9, 10, tzinfo=timezone(timedelta(hours=8)))
COMMON = {"Action", "Version", "Format", "AccessKeyId", "SignatureMethod", "SignatureVersion", "SignatureNonce"}
COMMON |= {"Timestamp", "Signature"}

# --------------------------------------------------------------------------- signing


VECTOR = {
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
    "AccessKeyId": "testid",
}


def test_published_test_vector() -> None:
    assert string_to_sign("GET", VECTOR) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    )
    assert sign("GET", VECTOR, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_an_existing_signature_parameter_is_not_signed() -> None:
    assert sign("GET", {**VECTOR, "Signature": "stale"}, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("AZaz09-_.~", "AZaz09-_.~"),
        ("a b", "a%20b"),
        ("*", "%2A"),
        ("+", "%2B"),
        ("/", "%2F"),
        ("%", "%25"),
        ("&=", "%26%3D"),
        ("2019-03-05 12:00:00", "2019-03-05%2012%3A00%3A00"),
        ("中", "%E4%B8%AD"),
        ("😀", "%F0%9F%98%80"),
        ("\x7f", "%7F"),
    ],
)
def test_percent_encode_follows_rfc_3986_over_utf8(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


def test_parameters_sort_by_raw_name_in_byte_order() -> None:
    # Raw "a-" < "a/" < "b" < "中", uppercase before lowercase; encoded names would sort "a%2F" first.
    canonical = string_to_sign("POST", {"中": "4", "b": "3", "a/": "2", "a-": "1", "B": "0"}).split("&", 2)[2]
    assert canonical == percent_encode("B=0&a-=1&a%2F=2&b=3&%E4%B8%AD=4")


def test_credentials_repr_hides_secret_and_token() -> None:
    text = repr(RpcCredentials(KEY_ID, SECRET, TOKEN))
    assert KEY_ID in text
    assert SECRET not in text
    assert TOKEN not in text
    assert "security_token=None" in repr(RpcCredentials(KEY_ID, SECRET))


# --------------------------------------------------------------------------- local API


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json;charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, **body: Any) -> Reply:
    return Reply(status, json.dumps(body).encode())


@dataclass
class LocalApi:
    """An Alibaba-RPC-shaped API: verifies the signature with the SDK, then answers ``reply``."""

    secret: str
    reply: Reply = field(default_factory=lambda: json_reply(200, RequestId="R-1", Code="OK", Answer=42))
    seen: list[dict[str, str]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    url: str = ""

    def answer(self, method: str, path: str, content_type: str, body: bytes) -> Reply:
        query = urlsplit(path).query
        if method == "POST":
            if not content_type.startswith("application/x-www-form-urlencoded"):
                return json_reply(400, Code="InvalidParameter", Message=f"content type {content_type}")
            query = body.decode("ascii")
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict"))
        self.seen.append(params)
        self.methods.append(method)
        self.raw_bodies.append(body)
        missing = sorted(COMMON - params.keys())
        if missing:
            return json_reply(400, Code="MissingParameter", Message=f"missing {missing}")
        if params["SignatureNonce"] in self.nonces:
            return json_reply(400, Code="SignatureNonceUsed", Message="nonce used")
        self.nonces.add(params["SignatureNonce"])
        unsigned = {name: value for name, value in params.items() if name != "Signature"}
        expected_sts = sdk_string_to_sign(method, unsigned)
        if params["Signature"] != sdk_signature(expected_sts, self.secret):
            # Like the real gateway: the message echoes the server's string to sign.
            return json_reply(
                400,
                RequestId="R-SIG",
                HostId="ccc.cn-shanghai.aliyuncs.com",
                Code="SignatureDoesNotMatch",
                Message="Specified signature is not matched with our calculation. "
                f"server string to sign is:{expected_sts}",
                Recommend="https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch",
            )
        return self.reply


def handler_for(api: LocalApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            reply = api.answer(self.command, self.path, self.headers.get("Content-Type", ""), body)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ThreadingHTTPServer, LocalApi]]:
    api = LocalApi(secret=SECRET)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(api))
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, api
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def api(server: tuple[ThreadingHTTPServer, LocalApi]) -> Iterator[LocalApi]:
    _, local = server
    yield local
    local.reply = LocalApi(secret=SECRET).reply
    local.seen.clear()
    local.methods.clear()
    local.raw_bodies.clear()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def client(
    api: LocalApi, http: requests.Session, credentials: RpcCredentials | None = None, **options: Any
) -> AlibabaRpcClient:
    return AlibabaRpcClient(
        api.url,
        "2017-07-05",
        credentials or RpcCredentials(KEY_ID, SECRET),
        http,
        clock=lambda: NOW,
        read_timeout=5,
        **options,
    )


PARAMS = {"InstanceId": "9cfad875-6260-4a53-ab6e-b13e3fb31f7d", "ContactId": "1272014011", "Note": "a b+c*~/中😀&="}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_call_sends_signed_common_parameters(api: LocalApi, http: requests.Session, method: str) -> None:
    reply = client(api, http, method=method, region_id="cn-shanghai").call("DownloadAllTypeRecording", PARAMS)

    assert reply == {"RequestId": "R-1", "Code": "OK", "Answer": 42}
    [sent] = api.seen
    assert api.methods == [method]
    assert {name: sent[name] for name in PARAMS} == PARAMS
    assert sent["Action"] == "DownloadAllTypeRecording"
    assert sent["Version"] == "2017-07-05"
    assert sent["Format"] == "JSON"
    assert sent["AccessKeyId"] == KEY_ID
    assert sent["SignatureMethod"] == "HMAC-SHA1"
    assert sent["SignatureVersion"] == "1.0"
    assert sent["Timestamp"] == "2024-05-01T08:09:10Z"  # the clock's 16:09:10+08:00 in UTC
    assert sent["RegionId"] == "cn-shanghai"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", sent["SignatureNonce"])
    assert "SecurityToken" not in sent


def test_post_body_uses_rfc_3986_encoding(api: LocalApi, http: requests.Session) -> None:
    client(api, http).call("DownloadRecording", {"FileName": "a b+c*~.wav"})

    [body] = api.raw_bodies
    assert b"FileName=a%20b%2Bc%2A~.wav" in body
    assert b"+" not in body


def test_nonce_is_fresh_for_every_call(api: LocalApi, http: requests.Session) -> None:
    rpc = client(api, http)
    rpc.call("DownloadRecording", {"FileName": "x.wav"})
    rpc.call("DownloadRecording", {"FileName": "x.wav"})

    assert len({sent["SignatureNonce"] for sent in api.seen}) == 2


def test_security_token_is_sent_and_signed(api: LocalApi, http: requests.Session) -> None:
    client(api, http, RpcCredentials(KEY_ID, SECRET, TOKEN)).call("DownloadRecording", {"FileName": "x.wav"})

    assert api.seen[0]["SecurityToken"] == TOKEN


def test_parameters_the_client_sets_cannot_be_overridden(api: LocalApi, http: requests.Session) -> None:
    with pytest.raises(ValueError, match="AccessKeyId"):
        client(api, http).call("DownloadRecording", {"AccessKeyId": "other"})
    assert api.seen == []


# --------------------------------------------------------------------------- errors


def call_error(api: LocalApi, http: requests.Session, credentials: RpcCredentials | None = None) -> RpcError:
    with pytest.raises(RpcError) as caught:
        client(api, http, credentials).call("DownloadRecording", {"InstanceId": "i-1", "FileName": "x.wav"})
    return caught.value


def test_wrong_secret_is_a_permanent_access_key_failure_without_secrets(api: LocalApi, http: requests.Session) -> None:
    wrong = RpcCredentials(KEY_ID, "wrong-secret", TOKEN)
    error = call_error(api, http, wrong)

    assert (error.http_status, error.code, error.request_id) == (400, "SignatureDoesNotMatch", "R-SIG")
    assert error.recommend and error.recommend.startswith("https://api.aliyun.com/")
    outcome = classify(error)
    assert isinstance(outcome, PermanentFailure)
    assert outcome.reason == (
        "access key rejected by 127.0.0.1 (SignatureDoesNotMatch): check the source's access key id and secret"
    )
    signature = api.seen[-1]["Signature"]
    for text in (str(error), error.message, repr(error), outcome.reason):
        for secret in ("wrong-secret", TOKEN, percent_encode(TOKEN), percent_encode(percent_encode(TOKEN)), signature):
            assert secret not in text


def test_not_exist_record_is_not_ready_when_the_provider_says_so(api: LocalApi, http: requests.Session) -> None:
    api.reply = json_reply(404, RequestId="R-2", Code="NotExist.Record", Message="Record 'x.wav' does not exist")
    error = call_error(api, http)

    assert (error.http_status, error.code, error.message) == (404, "NotExist.Record", "Record 'x.wav' does not exist")
    ready_later = classify(error, not_ready=frozenset({"NotExist.Record"}))
    assert isinstance(ready_later, RetryLater)
    assert ready_later.kind is RetryKind.NOT_READY
    permanent = classify(error)
    assert isinstance(permanent, PermanentFailure)
    assert "NotExist.Record" in permanent.reason
    assert "Record 'x.wav' does not exist" in permanent.reason


def test_503_without_json_is_provider_unavailable(api: LocalApi, http: requests.Session) -> None:
    api.reply = Reply(503, b"<html>Service Unavailable</html>", "text/html")
    error = call_error(api, http)

    assert (error.http_status, error.code) == (503, "HTTP503")
    outcome = classify(error)
    assert isinstance(outcome, RetryLater)
    assert outcome.kind is RetryKind.PROVIDER_UNAVAILABLE


def test_business_error_in_a_200_body_is_raised(api: LocalApi, http: requests.Session) -> None:
    api.reply = json_reply(200, RequestId="R-3", Code="isv.FLOW_LIMIT", Message="触发流控")
    error = call_error(api, http)

    assert (error.http_status, error.code, error.message, error.request_id) == (
        200,
        "isv.FLOW_LIMIT",
        "触发流控",
        "R-3",
    )
    outcome = classify(error)
    assert isinstance(outcome, RetryLater)
    assert outcome.kind is RetryKind.THROTTLED


def test_success_false_is_raised_with_the_status_the_body_states(api: LocalApi, http: requests.Session) -> None:
    api.reply = json_reply(200, Success=False, HttpStatusCode=502, Message="backend down")
    error = call_error(api, http)

    assert (error.http_status, error.code) == (502, "Success=false")
    outcome = classify(error)
    assert isinstance(outcome, RetryLater)
    assert outcome.kind is RetryKind.PROVIDER_UNAVAILABLE


def test_a_2xx_that_is_not_json_is_retried_with_a_hint(api: LocalApi, http: requests.Session) -> None:
    api.reply = Reply(200, b"<html>captive portal</html>", "text/html")
    error = call_error(api, http)

    assert error.code == "InvalidResponse"
    assert isinstance(classify(error), RetryLater)


def test_doubled_quotes_from_the_ccc_doc_sample_still_parse(api: LocalApi, http: requests.Session) -> None:
    # The body exactly as CCC 2017's DownloadRecording doc shows it (not valid JSON).
    url = (
        "http://cloudcallcenter-online.oss-cn-shanghai.aliyuncs.com/record/9cfad875-6260-4a53-ab6e-b13e3fb31f7d/"
        "153128491143400080327683.wav?Expires=1531401364&OSSAccessKeyId=LTAIvKWEr4DoFSqz"
        "&Signature=ktGp7huo71JFYcxiVYMZmygsXmE%3D"
    )
    body = (
        '{\n"HttpStatusCode":200,\n"MediaDownloadParam":{\n'
        f'"SignatureUrl":""{url}"",\n"FileName":"153128491143400080327683.wav"\n}},\n'
        '"Success":true,\n"Code":"OK"\n}'
    )
    api.reply = Reply(200, body.encode())

    reply = client(api, http).call("DownloadRecording", {"InstanceId": "i-1", "FileName": "x.wav"})

    assert strip_url_quotes(reply["MediaDownloadParam"]["SignatureUrl"]) == url


def test_unreachable_endpoint_is_retried_without_the_signed_url(http: requests.Session) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rpc = AlibabaRpcClient(
        f"http://127.0.0.1:{port}", "2017-05-25", RpcCredentials(KEY_ID, SECRET, TOKEN), http, method="GET"
    )

    with pytest.raises(RetryLater) as caught:
        rpc.call("QueryRecordFileDownloadUrl", {"CallId": "c-1"})

    assert caught.value.kind is RetryKind.PROVIDER_UNAVAILABLE
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert "Signature" not in str(caught.value)
    assert percent_encode(TOKEN) not in str(caught.value)


def test_a_redirect_is_refused_and_the_signed_request_goes_nowhere_else(api: LocalApi) -> None:
    # Given an endpoint that answers 307 (re-post the signed form there) to another server
    with Bystander() as elsewhere:
        api.reply = Reply(307, b"", "text/plain", headers=(("Location", f"{elsewhere.base_url}/"),))

        # When a client on the project's own HTTP session calls it
        with pytest.raises(PermanentFailure) as refused:
            client(api, HttpClients().session("shop-ccc")).call("DownloadAllTypeRecording", PARAMS)

        # Then the call ends with a readable reason and the other server received nothing
        assert refused.value.reason == (
            "DownloadAllTypeRecording on 127.0.0.1 answered 307 redirect to '127.0.0.1';"
            " redirects are refused (check the source's endpoint)"
        )
        assert elsewhere.requests == []


# --------------------------------------------------------------------------- classify


def rpc_error(code: str, status: int = 400, message: str = "vendor says no") -> RpcError:
    return RpcError(
        code, message, http_status=status, host="dyplsapi.aliyuncs.com", action="QueryRecordFileDownloadUrl"
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("Throttling", 400, RetryKind.THROTTLED),
        ("Throttling.User", 400, RetryKind.THROTTLED),
        ("Throttling.Api", 503, RetryKind.THROTTLED),
        ("isv.FLOW_LIMIT", 200, RetryKind.THROTTLED),
        ("HTTP429", 429, RetryKind.THROTTLED),
        ("ServiceUnavailable", 503, RetryKind.PROVIDER_UNAVAILABLE),
        ("InternalError", 500, RetryKind.PROVIDER_UNAVAILABLE),
        ("isp.SYSTEM_ERROR", 200, RetryKind.PROVIDER_UNAVAILABLE),
        ("isp.GATEWAY_ERROR", 200, RetryKind.PROVIDER_UNAVAILABLE),
        ("HTTP502", 502, RetryKind.PROVIDER_UNAVAILABLE),
        ("SomethingNew", 504, RetryKind.PROVIDER_UNAVAILABLE),
    ],
)
def test_transient_errors_are_retried(code: str, status: int, kind: RetryKind) -> None:
    outcome = classify(rpc_error(code, status))

    assert isinstance(outcome, RetryLater)
    assert outcome.kind is kind
    assert code in outcome.reason


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InvalidAccessKeyId.NotFound", "access key rejected by dyplsapi.aliyuncs.com (InvalidAccessKeyId.NotFound)"),
        ("IncompleteSignature", "access key rejected by dyplsapi.aliyuncs.com (IncompleteSignature)"),
        ("Forbidden.RAM", "permission denied (Forbidden.RAM): grant the RAM user"),
        ("isp.RAM_PERMISSION_DENY", "permission denied (isp.RAM_PERMISSION_DENY): grant the RAM user"),
        ("NotExist.Instance", "instance does not exist (NotExist.Instance)"),
        ("NotExists.InstanceId", "instance does not exist (NotExists.InstanceId)"),
        ("isv.POOLKEY_NOT_EXISTS", "pool key does not exist (isv.POOLKEY_NOT_EXISTS)"),
        ("OssNotOpen", "instance has no OSS storage enabled (OssNotOpen)"),
        ("isv.OUT_OF_SERVICE", "account out of service (overdue payment?) (isv.OUT_OF_SERVICE)"),
        ("MissingParameter", "QueryRecordFileDownloadUrl rejected its parameters (MissingParameter): vendor says no"),
        ("InvalidParameter", "QueryRecordFileDownloadUrl rejected its parameters (InvalidParameter): vendor says no"),
        ("isv.INVALID_PARAMETERS", "rejected its parameters (isv.INVALID_PARAMETERS): vendor says no"),
        ("NotExist.Record", "QueryRecordFileDownloadUrl on dyplsapi.aliyuncs.com failed (HTTP 400, NotExist.Record)"),
    ],
)
def test_permanent_errors_have_readable_reasons(code: str, expected: str) -> None:
    outcome = classify(rpc_error(code))

    assert isinstance(outcome, PermanentFailure)
    assert expected in outcome.reason
    assert code in outcome.reason


def test_providers_can_add_hints_and_not_ready_codes() -> None:
    hinted = classify(rpc_error("isv.NO_RECORD"), permanent_hints={"isv.NO_RECORD": "the call has no recording"})
    later = classify(rpc_error("isv.NO_RECORD", 200), not_ready=frozenset({"isv.NO_RECORD"}))

    assert isinstance(hinted, PermanentFailure)
    assert hinted.reason == "the call has no recording (isv.NO_RECORD)"
    assert isinstance(later, RetryLater)
    assert later.kind is RetryKind.NOT_READY


# --------------------------------------------------------------------------- SignatureUrl quotes


URL = "http://cloudcallcenter-online.oss-cn-shanghai.aliyuncs.com/a.wav?Expires=1&OSSAccessKeyId=K&Signature=s%3D"


@pytest.mark.parametrize(
    "wrapped",
    [
        URL,
        f'""{URL}""',
        f'"{URL}"',
        f"“”{URL}“”",
        f"“{URL}”",
        f"‘{URL}’",
        f"'{URL}'",
        f'  ""{URL} ""\n',  # CCC 2017 DownloadRecording: ""urlDetail ""
        f"\t“” {URL} “”  ",
    ],
)
def test_strip_url_quotes(wrapped: str) -> None:
    assert strip_url_quotes(wrapped) == URL


def test_strip_url_quotes_leaves_the_inside_alone() -> None:
    assert strip_url_quotes('"http://h/a"b.wav"') == 'http://h/a"b.wav'
    assert strip_url_quotes('""') == ""
