"""Tests for the S-series-style PBX API simulator, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from local.simulators.pbx import CDR_COLUMNS, PbxSimulator, make_self_signed
from local.simulators.wav import make_wav, wav_info
from tests.conftest import eventually

FAILED = {"status": "Failed"}


def failed(errno: str) -> dict[str, str]:
    return {"status": "Failed", "errno": errno}


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def sim() -> Iterator[PbxSimulator]:
    with PbxSimulator(push_backoff_s=0.05) as s:
        yield s


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def login(sim: PbxSimulator, http: requests.Session, **extra: Any) -> str:
    body = {"username": sim.username, "password": sim.password_md5, "port": "8260", **extra}
    reply = http.post(sim.url("login"), json=body, timeout=5).json()
    assert reply["status"] == "Success", reply
    token = reply["token"]
    assert isinstance(token, str)
    return token


def get_random(
    sim: PbxSimulator, http: requests.Session, token: str, recording: str, version: str = "v0.0.1", **extra: str
) -> dict[str, Any]:
    reply = http.post(
        sim.url("recording/get_random", version), params={"token": token}, json={"recording": recording, **extra}
    )
    assert reply.status_code == 200
    out: dict[str, Any] = reply.json()
    return out


def download(
    sim: PbxSimulator, http: requests.Session, token: str, recording: str, random: str, version: str = "v1.1.0"
) -> requests.Response:
    return http.get(
        sim.url("recording/download", version),
        params={"recording": recording, "random": random, "token": token},
        timeout=10,
    )


class SourceAddressAdapter(HTTPAdapter):
    """Makes requests connect from a chosen loopback address (127.0.0.2 is loopback on Linux)."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


class Receiver:
    """A tiny HTTP server standing in for the report URL; answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.received.append((dict(self.headers.items()), body))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/report"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- login and tokens


def test_login_with_md5_password(sim: PbxSimulator, http: requests.Session) -> None:
    token = login(sim, http)
    assert len(token) == 32 and int(token, 16) >= 0
    url = sim.url("login")
    assert http.post(url, json={"username": "api", "password": "apipass"}).json() == failed("20003")
    upper = sim.password_md5.upper()
    assert http.post(url, json={"username": "api", "password": upper}).json() == failed("20003")
    assert http.post(url, json={"username": "nobody", "password": sim.password_md5}).json() == failed("20003")
    assert http.post(url, json={"username": "api"}).json() == failed("10004")
    assert http.post(url, data=b"not json").json() == failed("10004")
    assert sim.counters["logins_ok"] == 1 and sim.counters["logins_failed"] == 3


def test_five_failures_lock_the_ip_for_ten_minutes(sim: PbxSimulator, http: requests.Session) -> None:
    url = sim.url("login")
    for _ in range(5):
        assert http.post(url, json={"username": "api", "password": "0" * 32}).json() == failed("20003")
    good = {"username": "api", "password": sim.password_md5}
    assert http.post(url, json=good).json() == failed("20002")
    sim.advance_time(599)
    assert http.post(url, json=good).json() == failed("20002")
    sim.advance_time(2)
    assert http.post(url, json=good).json()["status"] == "Success"
    assert sim.counters["logins_locked"] == 2


def test_token_expiry_and_errnos(sim: PbxSimulator, http: requests.Session) -> None:
    token = login(sim, http)
    hb = sim.url("heartbeat")
    assert http.post(hb, params={"token": token}).json() == {"status": "Success"}
    assert http.post(hb).json() == failed("20005")
    assert http.post(hb, params={"token": "f" * 32}).json() == failed("20004")
    sim.advance_time(1801)
    assert http.post(hb, params={"token": token}).json() == failed("20006")
    assert token not in sim.live_tokens


def test_heartbeat_keeps_token_alive_and_logout_ends_it(sim: PbxSimulator, http: requests.Session) -> None:
    token = login(sim, http)
    hb = sim.url("heartbeat", "v1.1.0")
    for _ in range(3):
        sim.advance_time(1700)
        assert http.post(hb, params={"token": token}).json() == {"status": "Success"}
    assert sim.counters["heartbeats"] == 3
    assert http.post(sim.url("logout"), params={"token": token}).json() == {"status": "Success"}
    assert http.post(hb, params={"token": token}).json() == failed("20004")


def test_unknown_paths_and_methods(sim: PbxSimulator, http: requests.Session) -> None:
    assert http.post(f"{sim.base_url}/api/v9.9.9/login", json={}).status_code == 404
    assert http.post(sim.url("nope"), json={}).status_code == 404
    assert http.get(sim.url("login")).status_code == 405


def test_web_server_quirks_survive_the_shared_base(sim: PbxSimulator, http: requests.Session) -> None:
    # Given the PBX's own web server behaviour on top of the simulators' shared loopback server
    cors = "Access-Control-Allow-Origin"
    # When a client sends a pre-flight, a HEAD, a bad path and a failing login
    preflight = http.options(sim.url("login"))
    head = http.head(sim.url("login"))
    missing = http.post(sim.url("nope"), json={})
    refused = http.post(sim.url("login"), json={"username": "nobody", "password": sim.password_md5})
    # Then CORS headers come on every answer, HEAD is not implemented, and neither is counted
    assert preflight.status_code == 200 and preflight.headers[cors] == "*"
    assert head.status_code == 501
    assert missing.status_code == 404 and missing.headers[cors] == "*"
    assert refused.json() == failed("20003") and refused.headers[cors] == "*"
    assert refused.headers["Server"].startswith("PbxSimulator Python/")
    # (Read by path: a freed loopback port may still be addressed by others, whose requests count too.)
    paths = [urlsplit(sim.url(endpoint)).path for endpoint in ("nope", "login")]
    assert [(method, path) for method, path, _ in sim.request_log if path in paths] == [("POST", p) for p in paths]
    assert sim.counters["requests"] == len(sim.request_log)  # what is counted is logged: not OPTIONS, HEAD


# --------------------------------------------------------------------------- recordings


def test_download_returns_exact_bytes(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call("101", "106", duration_s=120, channels=2)
    assert call.recording is not None and call.sha256 is not None
    assert call.recording.startswith("exten-101-106-") and call.recording.endswith(f"-{call.callid}.wav")
    assert call.size > 3_000_000
    token = login(sim, http)
    reply = get_random(sim, http, token, call.recording)
    assert reply["status"] == "Success" and reply["recording"] == call.recording and len(reply["random"]) == 32
    with http.get(
        sim.url("recording/download", "v1.1.0"),
        params={"recording": call.recording, "random": reply["random"], "token": token},
        stream=True,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "audio/x-wav"
        assert resp.headers["Content-Length"] == str(call.size)
        assert resp.headers["Content-Disposition"] == f"attachment; filename={call.recording}"
        data = b"".join(resp.iter_content(256 * 1024))
    assert hashlib.sha256(data).hexdigest() == call.sha256
    assert data == sim.recording(call.recording)
    assert wav_info(data)[:3] == (8000, 2, 16)
    assert eventually(lambda: sim.counters["downloads_ok"] == 1)


def test_random_is_single_use(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=5)
    assert call.recording is not None
    token = login(sim, http)
    rnd = get_random(sim, http, token, call.recording)["random"]
    assert download(sim, http, token, call.recording, rnd).content == sim.recording(call.recording)
    second = download(sim, http, token, call.recording, rnd)
    assert second.status_code == 200 and second.json() == FAILED
    assert sim.counters["downloads_failed"] == 1


def test_random_expires_after_30_seconds(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=5)
    assert call.recording is not None
    token = login(sim, http)
    rnd = get_random(sim, http, token, call.recording)["random"]
    sim.advance_time(31)
    assert download(sim, http, token, call.recording, rnd).json() == FAILED
    rnd = get_random(sim, http, token, call.recording)["random"]
    sim.advance_time(29)
    assert download(sim, http, token, call.recording, rnd).headers["Content-Type"] == "audio/x-wav"


def test_random_is_bound_to_recording_and_token(sim: PbxSimulator, http: requests.Session) -> None:
    a, b = sim.place_call(duration_s=2), sim.place_call(duration_s=2)
    assert a.recording and b.recording
    token, other = login(sim, http), login(sim, http)
    rnd = get_random(sim, http, token, a.recording)["random"]
    assert download(sim, http, token, b.recording, rnd).json() == FAILED
    assert download(sim, http, other, a.recording, rnd).json() == FAILED
    assert download(sim, http, token, a.recording, "0" * 32).json() == FAILED
    assert download(sim, http, token, a.recording, "").json() == failed("10004")
    assert download(sim, http, "", a.recording, rnd).json() == failed("20005")
    # None of the failures spent it.
    assert download(sim, http, token, a.recording, rnd).content == sim.recording(a.recording)


def test_get_random_errors(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=1)
    assert call.recording is not None
    token = login(sim, http)
    assert get_random(sim, http, token, "exten-1-2-20200505-042135-1588641695.1.wav") == failed("10023")
    url = sim.url("recording/get_random")
    assert http.post(url, params={"token": token}, json={}).json() == failed("10004")
    assert http.post(url, json={"recording": call.recording}).json() == failed("20005")
    assert get_random(sim, http, token, call.recording, allowedip="1.2.3.4,5.6.7.8") == failed("10004")
    sim.delete_recording(call.recording)
    assert get_random(sim, http, token, call.recording) == failed("10023")


def test_allowedip(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=2)
    assert call.recording is not None
    with requests.Session() as remote:
        remote.mount("http://", SourceAddressAdapter("127.0.0.2"))
        token = login(sim, remote)  # the "third-party server" logs in from 127.0.0.2
        rnd = get_random(sim, remote, token, call.recording)["random"]
        # Without allowedip only the IP that logged in may download.
        assert download(sim, http, token, call.recording, rnd).json() == FAILED
        assert download(sim, remote, token, call.recording, rnd).headers["Content-Type"] == "audio/x-wav"
        rnd = get_random(sim, remote, token, call.recording, allowedip="")["random"]
        assert download(sim, http, token, call.recording, rnd).json() == FAILED
        rnd = get_random(sim, remote, token, call.recording, allowedip="127.0.0.1")["random"]
        assert download(sim, http, token, call.recording, rnd).content == sim.recording(call.recording)


def test_seed_paths(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=3)
    assert call.recording is not None
    token = login(sim, http)
    base = sim.base_url
    rnd = http.post(
        f"{base}/api/v0.0.1/recording/get_random?token={token}",
        data=json.dumps({"recording": call.recording, "allowedip": "127.0.0.1"}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    ).json()["random"]
    resp = http.get(f"{base}/api/v1.1.0/recording/download?recording={call.recording}&random={rnd}&token={token}")
    assert hashlib.sha256(resp.content).hexdigest() == call.sha256


def test_wav_generation_is_deterministic() -> None:
    a = make_wav(180, seed="x")
    assert a == make_wav(180, seed="x") and a != make_wav(180, seed="y")
    assert len(a) == 44 + 180 * 8000 * 2 and wav_info(a) == (8000, 1, 16, 180.0)


# --------------------------------------------------------------------------- CDR


def raw_get(sim: PbxSimulator, target: str) -> tuple[str, dict[str, str], bytes]:
    """Send a request line verbatim (requests would percent-encode the seed's raw spaces)."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


def test_cdr_csv_with_raw_space_query(sim: PbxSimulator, http: requests.Session) -> None:
    from datetime import datetime

    a = sim.place_call("1000", "1001", start=datetime(2020, 5, 2, 10, 0, 0), duration_s=1)
    b = sim.place_call("1002", "1003", start=datetime(2020, 5, 3, 11, 0, 0), duration_s=1, recorded=False)
    sim.place_call("1000", "1005", start=datetime(2020, 6, 1, 0, 0, 0), duration_s=1)
    token = login(sim, http)
    url = sim.url("cdr/get_random")
    window = {"starttime": "2020-05-01 00:00:00", "endtime": "2020-05-05 23:59:59"}
    reply = http.post(url, params={"token": token}, json={"extid": "all", **window}).json()
    assert reply["status"] == "Success" and reply["extid"] == "all" and reply["starttime"] == window["starttime"]
    target = (
        f"/api/v0.0.1/cdr/download?extid=all&starttime=2020-05-01 00:00:00&endtime=2020-05-05 23:59:59"
        f"&token={token}&random={reply['random']}"
    )
    status, headers, body = raw_get(sim, target)
    assert status.endswith("200 OK") and headers["content-type"] == "text/csv"
    rows = body.decode().splitlines()
    assert rows[0] == ",".join(CDR_COLUMNS)
    assert [r.split(",")[0] for r in rows[1:]] == [a.callid, b.callid]
    assert rows[2].split(",")[CDR_COLUMNS.index("recording")] == ""

    # Percent-encoded, one extension; random bound to the parameters it was issued for.
    reply = http.post(url, params={"token": token}, json={"extid": "1002,1003", **window}).json()
    params = {"extid": "1002,1003", **window, "token": token, "random": reply["random"]}
    wrong = dict(params, extid="all")
    assert http.get(sim.url("cdr/download"), params=wrong).json() == FAILED
    csv_text = http.get(sim.url("cdr/download"), params=params).text
    assert [r.split(",")[0] for r in csv_text.splitlines()[1:]] == [b.callid]

    bad = {"extid": "all", "starttime": "2020/05/01", "endtime": window["endtime"]}
    assert http.post(url, params={"token": token}, json=bad).json() == failed("10004")
    assert http.post(url, params={"token": token}, json={"extid": "all"}).json() == failed("10004")


# --------------------------------------------------------------------------- event pushes


def test_newcdr_push(sim: PbxSimulator, http: requests.Session) -> None:
    with Receiver() as rx:
        login(sim, http, url=rx.url, urltag="1")
        assert sim.report_url == rx.url
        call = sim.place_call("101", "106", duration_s=2)
        quiet = sim.place_call("101", "107", status="NO ANSWER", recorded=False)
        assert sim.wait_pushes()
        assert sim.push_report(call) == 1  # the same NewCdr delivered twice
        assert sim.wait_pushes()
    bodies = [b for _, b in rx.received]
    assert bodies == [call.report, quiet.report, call.report]
    headers, first = rx.received[0]
    assert headers["User-Agent"] == "WebAPI" and headers["Content-Type"] == "application/json"
    assert first["action"] == "NewCdr" and first["recording"] == call.recording
    assert all(isinstance(v, str) for v in first.values())
    assert {"callduraction", "talkduraction", "cdrid", "sn", "didnumber"} <= set(first)
    assert "recording" not in bodies[1] and bodies[1]["talkduraction"] == "0"
    assert [p.status for p in sim.pushes] == [200, 200, 200]


def test_push_resends_until_200(sim: PbxSimulator, http: requests.Session) -> None:
    with Receiver([500, 404]) as rx:
        login(sim, http, url=rx.url, urltag=1)
        sim.place_call(duration_s=1)
        assert sim.wait_pushes()
    assert [p.status for p in sim.pushes] == [500, 404, 200]
    assert len(rx.received) == 3 and sim.counters["pushes_ok"] == 1


def test_push_gives_up_and_skips_without_live_token(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=1)  # nobody logged in
    assert sim.skipped_reports == [call.report]
    with Receiver([503, 503, 503]) as rx:
        login(sim, http, url=rx.url)  # no urltag: not registered
        assert sim.push_report(call) == 0
        token = login(sim, http, url=rx.url, urltag="1")
        sim.place_call(duration_s=1)
        assert sim.wait_pushes()
        assert [p.status for p in sim.pushes] == [503, 503, 503] and sim.counters["pushes_failed"] == 1
        sim.advance_time(1801)  # token dies: the PBX stops pushing
        assert sim.push_report(call) == 0
    assert len(sim.skipped_reports) == 3 and token not in sim.live_tokens


def test_v2_report_style() -> None:
    with PbxSimulator(report_style="v2") as sim:
        report = sim.place_call(duration_s=1).report
    assert report["event"] == "NewCdr" and "action" not in report


# --------------------------------------------------------------------------- faults


def test_fault_slow_and_5xx(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=2)
    assert call.recording is not None
    token = login(sim, http)
    rnd = get_random(sim, http, token, call.recording)["random"]
    sim.set_fault("error_5xx", count=2, status=503)
    for _ in range(2):
        resp = download(sim, http, token, call.recording, rnd)
        assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("text/plain")
    sim.set_fault("slow", seconds=0.3)
    start = time.monotonic()
    assert download(sim, http, token, call.recording, rnd).content == sim.recording(call.recording)
    assert time.monotonic() - start >= 0.3
    assert sim.counters["downloads_5xx"] == 2 and sim.faults_pending() == {}


def test_fault_truncate(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=60)
    assert call.recording is not None
    token = login(sim, http)
    rnd = get_random(sim, http, token, call.recording)["random"]
    sim.set_fault("truncate")
    got = bytearray()
    with (
        pytest.raises(requests.exceptions.RequestException),
        download_stream(sim, http, token, call.recording, rnd) as resp,
    ):
        assert resp.headers["Content-Length"] == str(call.size)
        for chunk in resp.iter_content(65536):
            got += chunk
    # The client sees at most the half that was sent (requests drops the short last read).
    assert 0 < len(got) <= call.size // 2
    assert download(sim, http, token, call.recording, rnd).json() == FAILED  # the random was spent
    assert eventually(lambda: sim.counters["downloads_truncated"] == 1)


def download_stream(
    sim: PbxSimulator, http: requests.Session, token: str, recording: str, random: str
) -> requests.Response:
    return http.get(
        sim.url("recording/download", "v1.1.0"),
        params={"recording": recording, "random": random, "token": token},
        stream=True,
        timeout=10,
    )


def test_fault_redirect_sends_any_operation_elsewhere_with_its_path_and_query(
    sim: PbxSimulator, http: requests.Session
) -> None:
    call = sim.place_call(duration_s=1)
    assert call.recording is not None
    sim.set_fault("redirect", endpoint="login", status=307, location="http://127.0.0.1:9")
    body = {"username": sim.username, "password": sim.password_md5}
    moved = http.post(sim.url("login"), json=body, allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (307, "http://127.0.0.1:9/api/v0.0.1/login")
    token = login(sim, http)  # one request only: the next login is answered
    rnd = get_random(sim, http, token, call.recording)["random"]
    sim.set_fault("redirect", location="https://files.example.com")  # recording/download, 302
    moved = http.get(sim.url("recording/download"), params={"random": rnd}, allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (
        302,
        f"https://files.example.com/api/v0.0.1/recording/download?random={rnd}",
    )
    assert sim.counters["fault:redirect"] == 2 and sim.faults_pending() == {}
    with pytest.raises(ValueError, match="status must be one of"):
        sim.set_fault("redirect", status=200, location="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="location must look like"):
        sim.set_fault("redirect", location="127.0.0.1:9/path")


def test_fault_expire_random_and_tokens(sim: PbxSimulator, http: requests.Session) -> None:
    call = sim.place_call(duration_s=1)
    assert call.recording is not None
    token = login(sim, http)
    sim.set_fault("expire_random")
    rnd = get_random(sim, http, token, call.recording)["random"]
    assert download(sim, http, token, call.recording, rnd).json() == FAILED
    sim.set_fault("expire_token")
    assert http.post(sim.url("heartbeat"), params={"token": token}).json() == failed("20006")
    token = login(sim, http)
    other = login(sim, http)
    sim.expire_all_tokens()
    for t in (token, other):
        assert get_random(sim, http, t, call.recording) == failed("20006")
    with pytest.raises(ValueError):
        sim.set_fault("melt")


def test_tls_with_ca_bundle_and_opt_out(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    with PbxSimulator(tls=files) as sim, requests.Session() as http:
        assert sim.base_url.startswith("https://127.0.0.1:")
        body = {"username": "api", "password": sim.password_md5}
        assert http.post(sim.url("login"), json=body, verify=str(files.ca_path)).json()["status"] == "Success"
        assert http.post(sim.url("login"), json=body, verify=str(files.cert_path)).json()["status"] == "Success"
        with pytest.raises(requests.exceptions.SSLError):
            http.post(sim.url("login"), json=body, verify=True)
        with pytest.warns(Warning):  # urllib3 warns about unverified HTTPS
            assert http.post(sim.url("login"), json=body, verify=False).json()["status"] == "Success"
