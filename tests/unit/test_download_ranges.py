"""Byte ranges and broken bodies, over real HTTP: how the simulated providers answer ``Range``
(OSS as its documents say, a PBX that ignores it unless told otherwise), how their ``truncate``
faults break a body off, and how callvault's download side reads such replies (where the body
starts in the file, and the file's size).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from callvault.download_hosts import DownloadHosts
from callvault.errors import RetryKind, RetryLater
from callvault.signed_download import open_signed_url
from local.simulators.oss import OssSimulator
from local.simulators.pbx import PbxSimulator
from tests.aliyun_requests import xml_error
from tests.conftest import eventually

DATA = os.urandom(300_000)
SIZE = len(DATA)


@pytest.fixture
def oss() -> Iterator[OssSimulator]:
    with OssSimulator() as sim:
        sim.put_object("rec-bucket", "a/b.wav", DATA)
        yield sim


def link(oss: OssSimulator) -> str:
    return oss.presign("rec-bucket", "a/b.wav", 600)


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=5)


# --------------------------------------------------------------------------- OSS


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        ("bytes=100-199", 100, 199),
        ("bytes=299990-", 299_990, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=0-9,20-29", 0, 9),  # several ranges: only the first counts
    ],
)
def test_oss_serves_a_valid_range_as_206_with_its_content_range(
    oss: OssSimulator, asked: str, first: int, last: int
) -> None:
    reply = get(link(oss), Range=asked)

    assert reply.status_code == 206
    assert reply.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert reply.content == DATA[first : last + 1]


@pytest.mark.parametrize("asked", ["bytes=0-300000", f"bytes={SIZE}-", "bytes=-400000", "byte=0-499", "bytes=9-3"])
def test_oss_ignores_an_invalid_or_out_of_range_range_and_sends_the_whole_object(oss: OssSimulator, asked: str) -> None:
    reply = get(link(oss), Range=asked)

    assert reply.status_code == 200 and "Content-Range" not in reply.headers
    assert reply.content == DATA


def test_oss_standard_range_behaviour_cuts_the_end_and_refuses_a_start_past_the_object(oss: OssSimulator) -> None:
    # The header is an x-oss-* header, so the link must be signed with it (V1 signs every one).
    expires = int(oss.now() + 600)
    signature = oss.signature("GET", "rec-bucket", "a/b.wav", expires, "x-oss-range-behavior:standard\n")
    url = (
        link(oss).split("?")[0]
        + "?"
        + requests.compat.urlencode({"Expires": expires, "OSSAccessKeyId": oss.access_key_id, "Signature": signature})
    )
    standard = {"x-oss-range-behavior": "standard"}

    cut = get(url, Range="bytes=299000-400000", **standard)
    beyond = get(url, Range=f"bytes={SIZE}-", **standard)

    assert (cut.status_code, cut.headers["Content-Range"]) == (206, f"bytes 299000-{SIZE - 1}/{SIZE}")
    assert cut.content == DATA[299_000:]
    assert (beyond.status_code, xml_error(beyond)["Code"]) == (416, "InvalidRange")


def test_an_x_oss_header_the_link_was_not_signed_with_breaks_the_signature(oss: OssSimulator) -> None:
    reply = get(link(oss), Range="bytes=10-", **{"x-oss-range-behavior": "standard"})

    assert (reply.status_code, xml_error(reply)["Code"]) == (403, "SignatureDoesNotMatch")
    assert "x-oss-range-behavior:standard\n/rec-bucket/a/b.wav" in xml_error(reply)["StringToSign"]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_truncate_fault_breaks_the_body_off_at_the_byte_asked(oss: OssSimulator, how: str) -> None:
    oss.set_fault("truncate", at_byte=100_000, how=how)
    got = bytearray()

    with pytest.raises(requests.RequestException), requests.get(link(oss), stream=True, timeout=5) as reply:
        assert reply.headers["Content-Length"] == str(SIZE)
        for chunk in reply.iter_content(1000):
            got += chunk

    assert bytes(got) == DATA[: len(got)] and len(got) <= 100_000
    assert eventually(lambda: oss.counters.get("downloads_truncated") == 1)


def test_a_truncate_fault_counts_its_byte_in_the_whole_file_on_a_ranged_request(oss: OssSimulator) -> None:
    oss.set_fault("truncate", at_byte=150_000)

    with (
        pytest.raises(requests.RequestException),
        requests.get(link(oss), headers={"Range": "bytes=100000-"}, stream=True, timeout=5) as reply,
    ):
        assert reply.status_code == 206
        for chunk in reply.iter_content(1000):
            assert chunk == DATA[100_000 + reply.raw.tell() - len(chunk) : 100_000 + reply.raw.tell()]

    assert eventually(lambda: oss.counters.get("bytes_sent") == 50_000)


def test_a_link_can_expire_for_the_resume_only(oss: OssSimulator) -> None:
    oss.set_fault("expire_link", ranged=True)
    url = link(oss)

    whole = get(url)
    resumed = get(url, Range="bytes=10-")

    assert whole.status_code == 200
    assert (resumed.status_code, xml_error(resumed)["Message"]) == (403, "Request has expired.")


# --------------------------------------------------------------------------- PBX


def pbx_download(pbx: PbxSimulator, recording: str, **headers: str) -> requests.Response:
    with requests.Session() as http:
        body = {"username": pbx.username, "password": pbx.password_md5}
        token = http.post(pbx.url("login"), json=body, timeout=5).json()["token"]
        random = http.post(
            pbx.url("recording/get_random"), params={"token": token}, json={"recording": recording}, timeout=5
        ).json()["random"]
        return http.get(
            pbx.url("recording/download", "v1.1.0"),
            params={"recording": recording, "random": random, "token": token},
            headers=headers,
            timeout=5,
        )


def test_a_pbx_ignores_range_by_default_and_sends_the_whole_recording() -> None:
    with PbxSimulator() as pbx:
        call = pbx.place_call(duration_s=10, push=False)
        assert call.recording is not None

        reply = pbx_download(pbx, call.recording, Range="bytes=1000-")

        assert reply.status_code == 200 and "Content-Range" not in reply.headers
        assert reply.content == pbx.recording(call.recording)


def test_a_pbx_made_to_honour_range_answers_206_or_416() -> None:
    with PbxSimulator(honour_range=True) as pbx:
        call = pbx.place_call(duration_s=10, push=False)
        assert call.recording is not None
        audio = pbx.recording(call.recording)

        rest = pbx_download(pbx, call.recording, Range="bytes=1000-")
        beyond = pbx_download(pbx, call.recording, Range=f"bytes={len(audio)}-")

        assert (rest.status_code, rest.headers["Content-Range"]) == (206, f"bytes 1000-{len(audio) - 1}/{len(audio)}")
        assert rest.content == audio[1000:]
        assert (beyond.status_code, beyond.headers["Content-Range"]) == (416, f"bytes */{len(audio)}")


# --------------------------------------------------------------------------- callvault's reading of the replies


def opened(url: str, offset: int) -> Any:
    return open_signed_url(
        requests.Session(),
        url,
        hosts=DownloadHosts(exact=frozenset({"127.0.0.1"}), suffixes=()),
        read_timeout=5,
        offset=offset,
    )


def test_a_download_from_an_offset_says_where_its_body_starts_and_the_files_size(oss: OssSimulator) -> None:
    with opened(link(oss), 123_456) as stream:
        body = b"".join(stream.chunks(65536))

    assert (stream.start, stream.total_size, stream.content_length) == (123_456, SIZE, SIZE - 123_456)
    assert body == DATA[123_456:]


def test_a_range_the_provider_ignored_reads_as_the_whole_file(oss: OssSimulator) -> None:
    with opened(link(oss), SIZE + 10) as stream:  # out of range: OSS sends everything
        assert (stream.start, stream.total_size) == (0, SIZE)


def test_a_206_that_is_not_the_rest_of_the_file_is_refused(monkeypatch: pytest.MonkeyPatch, oss: OssSimulator) -> None:
    # A server that answers bytes=N- with a bounded piece: nothing could resume on it.
    monkeypatch.setattr("callvault.signed_download.range_header", lambda offset: {"Range": "bytes=10-19"})

    with pytest.raises(RetryLater) as refused, opened(link(oss), 10):
        pass

    assert refused.value.kind is RetryKind.TRANSFER_FAILED
    assert "Content-Range that is not the rest of the file ('bytes 10-19/300000')" in refused.value.reason
