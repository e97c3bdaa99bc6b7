"""How the PBX reads the fields of a request: anything malformed is errno 10004."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from typing import Any

from local.simulators.pbx.calls import TIME_FORMAT
from local.simulators.pbx.sessions import PbxFailure

__all__ = ["allowed_ip", "cdr_query", "json_body", "str_field"]

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_EXTID_RE = re.compile(r"all|\d+(,\d+)*")


def json_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a POST body (an empty body is an empty object)."""
    if not raw.strip():
        return {}
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PbxFailure("10004") from None
    if not isinstance(obj, dict):
        raise PbxFailure("10004")
    return obj


def str_field(body: dict[str, Any], name: str, *, required: bool) -> str:
    """A string (or integer) field, stripped; ``""`` when optional and absent."""
    value = body.get(name)
    if value is None:
        if required:
            raise PbxFailure("10004")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PbxFailure("10004")
    text = str(value).strip()
    if required and not text:
        raise PbxFailure("10004")
    return text


def allowed_ip(body: dict[str, Any]) -> str:
    """The optional ``allowedip``: exactly one IP address, normalised."""
    text = str_field(body, "allowedip", required=False)
    if text:
        try:
            text = str(ipaddress.ip_address(text))
        except ValueError:
            raise PbxFailure("10004") from None
    return text


def cdr_query(src: dict[str, str]) -> tuple[str, str, str]:
    """``(extid, starttime, endtime)`` of a CDR request: ``all`` or extensions, two local times."""
    extid = src.get("extid", "").replace(" ", "")
    start, end = src.get("starttime", ""), src.get("endtime", "")
    if not _EXTID_RE.fullmatch(extid):
        raise PbxFailure("10004")
    for text in (start, end):
        if not _TIME_RE.fullmatch(text):
            raise PbxFailure("10004")
        try:
            dt.datetime.strptime(text, TIME_FORMAT)
        except ValueError:
            raise PbxFailure("10004") from None
    return extid, start, end
