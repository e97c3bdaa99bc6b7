"""No PBX call follows a redirect: the PBX simulator answers 302/307, a bystander records visits.

A followed 302 on ``recording/download`` would archive another host's answer as the recording;
a followed 307 on ``login`` would re-post the username, the password hash and the webhook token
(in the report URL) to the redirect's target. Every call refuses, with a reason that names the
target's host, and the target receives nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from callvault.errors import PermanentFailure
from callvault.http import HttpClients
from callvault.providers.pbx.api import PbxClient, parse_settings
from local.simulators.pbx import PbxSimulator
from tests.bystander import Bystander

REFUSED = "redirects are refused (point base_url at the address the PBX API answers on)"
REPORT_URL = "https://hooks.example.com/webhooks/office-pbx?token=webhook-token-0123456789"


@pytest.fixture(scope="module")
def pbx() -> Iterator[PbxSimulator]:
    with PbxSimulator() as simulator:
        yield simulator


@pytest.fixture
def bystander() -> Iterator[Bystander]:
    with Bystander() as server:
        yield server


def pbx_client(pbx: PbxSimulator) -> PbxClient:
    settings = parse_settings(
        {"base_url": pbx.base_url, "username": "api", "password": "apipass"}, where="source 'office-pbx', pbx"
    )
    return PbxClient(settings, HttpClients().session("office-pbx"))


def recording_of(pbx: PbxSimulator) -> str:
    recording = pbx.place_call(duration_s=2, push=False).recording
    assert recording is not None
    return recording


def download_recording(client: PbxClient, pbx: PbxSimulator, token: str) -> object:
    recording = recording_of(pbx)
    return client.download_recording(token, recording, client.get_random(token, recording))


def download_cdr(client: PbxClient, pbx: PbxSimulator, token: str) -> object:
    return client.download_cdr(token, "2026-01-01 00:00:00", "2026-01-01 01:00:00")


# Each PBX operation, called the way the provider calls it; the token comes from a clean login.
CALLS: dict[str, Callable[[PbxClient, PbxSimulator, str], object]] = {
    "login": lambda client, pbx, token: client.login(REPORT_URL),
    "heartbeat": lambda client, pbx, token: client.heartbeat(token),
    "logout": lambda client, pbx, token: client.logout(token),
    "recording/get_random": lambda client, pbx, token: client.get_random(token, recording_of(pbx)),
    "recording/download": download_recording,
    "cdr/get_random": download_cdr,
    "cdr/download": download_cdr,
}


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("operation", list(CALLS))
def test_every_pbx_call_refuses_a_redirect_and_sends_nothing_to_its_target(
    pbx: PbxSimulator, bystander: Bystander, operation: str, status: int
) -> None:
    # Given a PBX that answers this operation with a redirect to another server
    client = pbx_client(pbx)
    token = client.login(None)
    pbx.set_fault("redirect", 1, endpoint=operation, status=status, location=bystander.base_url)

    # When the client makes the call
    with pytest.raises(PermanentFailure) as refused:
        CALLS[operation](client, pbx, token)

    # Then it ends with a reason naming the target, and the target never heard from us
    assert refused.value.reason == f"PBX {operation} answered {status} redirect to '127.0.0.1'; {REFUSED}"
    assert pbx.faults_pending() == {}, "the redirect was answered"
    assert bystander.requests == []
