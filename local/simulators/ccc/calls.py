"""A simulated CCC instance's calls and recording files, and how the 2017-07-05 API lists them.

A call placed with :meth:`local.simulators.ccc.CccSimulator.place_call` is a :class:`CccCall`:
its files live on the simulator's OSS and become downloadable at ``ready_at``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from local.simulators.aliyun.gateway import JsonDict

__all__ = [
    "BEIJING",
    "DISPOSITION",
    "V2_CONTACT_TYPES",
    "V2017",
    "V2020",
    "CccCall",
    "CccFile",
    "EventPush",
    "agent_name",
    "ms",
    "recordings_2017",
]

V2017 = "2017-07-05"
V2020 = "2020-07-01"
#: The instance's time zone (UTC+8); China has no DST, so a fixed offset is exact.
BEIJING = dt.timezone(dt.timedelta(hours=8))
#: Every simulated call ends normally.
DISPOSITION = "Success"
#: The 2020-07-01 names of the call types (``ContactType`` enum of its API reference).
V2_CONTACT_TYPES: Mapping[str, str] = {"INBOUND": "Inbound", "OUTBOUND": "Outbound", "INTERNAL": "Internal"}


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

    def is_ready(self, now: float) -> bool:
        """Whether its recordings can be downloaded at ``now`` (never, when not recorded)."""
        return self.recorded and now >= self.ready_at


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


def ms(epoch_s: float) -> int:
    """Epoch seconds as the epoch milliseconds CCC's times are."""
    return int(epoch_s * 1000)


def agent_name(call: CccCall) -> str:
    """The agent's name as CCC shows it: the part of the agent id before ``@``."""
    return call.agent_id.split("@")[0]


def recordings_2017(call: CccCall, now: float) -> list[JsonDict]:
    """``Recording`` entries of a call at ``now``: its merged legs, once ready (none before, none unrecorded)."""
    if not call.is_ready(now):
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
                "StartTime": ms(call.start + offset),
                "AgentId": call.agent_id,
                "AgentName": agent_name(call),
                "CallingNumber": call.caller,
                "CalledNumber": call.callee,
                "Channel": "AUDIO",
                "InstanceId": call.instance_id,
            }
        )
        offset += f.duration_s
    return recordings
