"""CCC's ``ListCallDetailRecords``, both API versions, over the calls of one simulated instance.

Request and reply fields as in the vendor's SDK models (``aliyun-openapi-meta``
``ccc/ListCallDetailRecords.json``) and the 2020-07-01 API reference: lists the calls whose
``StartTime`` (epoch ms) lies in ``[StartTime, StopTime]`` (2017) or ``[StartTime, EndTime]``
(2020), both inclusive, newest first; ``InstanceId``, ``PageNumber`` and ``PageSize`` are
required, the window defaults to today 00:00 (UTC+8) .. now (documented for 2020, assumed for
2017).

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
are accepted and not applied.  An unrecorded call is listed without recordings
(``RecordingReady`` false).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Protocol

from local.simulators.aliyun.gateway import JsonDict, RpcContext, RpcError
from local.simulators.ccc.calls import BEIJING, DISPOSITION, V2_CONTACT_TYPES, CccCall, agent_name, ms, recordings_2017
from local.simulators.ccc.replies import (
    check_instance_2017,
    error_2017,
    reply_2017,
    required,
    v2_error,
    v2_instance,
    v2_reply,
)

__all__ = ["CallRegister", "list_cdrs_2017", "list_cdrs_2020"]

_INTEGER = re.compile(r"-?[0-9]+")
_MAX_WINDOW_2017_MS = 7 * 86400 * 1000


class CallRegister(Protocol):
    """What the listing reads from a simulated CCC instance."""

    instance_id: str

    @property
    def calls(self) -> list[CccCall]:
        """Every call, in the order placed."""
        ...

    def now(self) -> float:
        """Simulated epoch seconds."""
        ...


def list_cdrs_2017(ccc: CallRegister, ctx: RpcContext) -> JsonDict:
    """``ListCallDetailRecords`` 2017-07-05."""
    instance_id, _, _ = required(ctx, "InstanceId", "PageNumber", "PageSize")
    now = ccc.now()
    start_ms, stop_ms = _default_window(now)
    args = _integers(
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
            raise error_2017("InvalidParameter", f"The parameter {name} must be in [1, {top}].", 400)
    if stop_ms - start_ms > _MAX_WINDOW_2017_MS:
        raise error_2017(
            "InvalidParameter", "The time range between StartTime and StopTime may not exceed 7 days.", 400
        )
    check_instance_2017(instance_id, ccc.instance_id)
    p = ctx.params
    phone = p.get("PhoneNumber")
    criteria = p.get("Criteria")
    calls = [
        c
        for c in _calls_started(ccc.calls, start_ms, stop_ms)
        if p.get("ContactId") in (None, c.contact_id)
        and p.get("ContactType") in (None, c.call_type)
        and p.get("ContactDisposition") in (None, DISPOSITION)
        and phone in (None, c.caller, c.callee)
        and (criteria is None or criteria in c.caller or criteria in c.callee)
        and (p.get("WithRecording", "false").lower() != "true" or c.is_ready(now))
    ]
    page = calls[(number - 1) * size : number * size]
    return reply_2017(
        ctx,
        {
            "CallDetailRecords": {
                "TotalCount": len(calls),
                "PageNumber": number,
                "PageSize": size,
                "List": {"CallDetailRecord": [_cdr_2017(c, now) for c in page]},
            }
        },
    )


def list_cdrs_2020(ccc: CallRegister, ctx: RpcContext) -> JsonDict:
    """``ListCallDetailRecords`` 2020-07-01."""
    required(ctx, "InstanceId", "PageNumber", "PageSize")
    now = ccc.now()
    start_ms, end_ms = _default_window(now)

    def bad_format(name: str) -> RpcError:
        return v2_error(400, "Parameter.Format", f"The format of parameter {name} is invalid.")

    args = _integers(ctx, {"PageNumber": None, "PageSize": None, "StartTime": start_ms, "EndTime": end_ms}, bad_format)
    number, size = args["PageNumber"], args["PageSize"]
    for name, value in (("PageNumber", number), ("PageSize", size)):
        if not 1 <= value <= 100:  # documented: 1-100 for both; the code is inferred
            raise v2_error(400, "Parameter.Invalid", f"The parameter {name} is invalid. It must be 1-100.")
    v2_instance(ctx, ccc.instance_id)
    p = ctx.params
    sort_order = p.get("SortOrder", "DESC").upper()
    if sort_order not in ("ASC", "DESC"):
        raise v2_error(400, "Parameter.Invalid", "The parameter SortOrder is invalid. ASC or DESC.")
    if "ContactId" in p:  # documented: a ContactId makes every other filter ignored
        calls = [c for c in ccc.calls if c.contact_id == p["ContactId"]]
    else:
        part = _criteria_phone(p.get("Criteria"), bad_format)
        calls = [
            c
            for c in _calls_started(ccc.calls, args["StartTime"], args["EndTime"], newest_first=sort_order == "DESC")
            if p.get("CallingNumber") in (None, c.caller)
            and p.get("CalledNumber") in (None, c.callee)
            and p.get("ContactType") in (None, V2_CONTACT_TYPES.get(c.call_type, c.call_type))
            and p.get("ContactDisposition") in (None, DISPOSITION)
            and p.get("AgentId") in (None, c.agent_id)
            and (part is None or part in c.caller or part in c.callee)
        ]
    page = calls[(number - 1) * size : number * size]
    return v2_reply(
        ctx,
        {
            # Documented: filled on the first page only, 0 on the others.
            "TotalCount": len(calls) if number == 1 else 0,
            "PageNumber": number,
            "PageSize": size,
            "List": [_cdr_2020(c, now) for c in page],
        },
    )


def _integers(
    ctx: RpcContext, defaults: Mapping[str, int | None], bad_format: Callable[[str], RpcError]
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


def _default_window(now: float) -> tuple[int, int]:
    """Today 00:00 in the instance's time zone (UTC+8) .. now, in epoch ms."""
    midnight = dt.datetime.fromtimestamp(now, BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
    return ms(midnight.timestamp()), ms(now)


def _calls_started(calls: list[CccCall], start_ms: int, end_ms: int, *, newest_first: bool = True) -> list[CccCall]:
    """Calls whose start lies in ``[start_ms, end_ms]``; equal starts: the later placed is newer."""
    inside = [c for c in calls if start_ms <= ms(c.start) <= end_ms]
    if newest_first:
        return sorted(reversed(inside), key=lambda c: ms(c.start), reverse=True)
    return sorted(inside, key=lambda c: ms(c.start))


def _cdr_2017(call: CccCall, now: float) -> JsonDict:
    return {
        "ContactId": call.contact_id,
        "InstanceId": call.instance_id,
        "StartTime": ms(call.start),
        "Duration": round(call.duration_s),
        "ContactType": call.call_type,
        "ContactDisposition": DISPOSITION,
        "CallingNumber": call.caller,
        "CalledNumber": call.callee,
        "AgentNames": agent_name(call),
        "SkillGroupNames": "",
        "Agents": {"CallDetailAgent": [{"AgentId": call.agent_id, "AgentName": agent_name(call)}]},
        "Recordings": {"Recording": recordings_2017(call, now)},
    }


def _cdr_2020(call: CccCall, now: float) -> JsonDict:
    seconds = round(call.duration_s)
    return {
        "ContactId": call.contact_id,
        "InstanceId": call.instance_id,
        "ContactType": V2_CONTACT_TYPES.get(call.call_type, call.call_type),
        "ContactDisposition": DISPOSITION,
        "CallingNumber": call.caller,
        "CalledNumber": call.callee,
        "AgentIds": call.agent_id,
        "AgentNames": agent_name(call),
        "StartTime": ms(call.start),
        "EstablishedTime": ms(call.start),
        "ReleaseTime": ms(call.end),
        "CallDuration": str(seconds),
        "TalkTime": seconds,
        "RecordingDuration": seconds if call.recorded else 0,
        "RecordingReady": call.is_ready(now),
    }


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
