"""The PBX's record of a finished call: its CDR row, its NewCdr report and the CDR export.

The vendor does not publish the CDR CSV's columns, so clients must parse it by header; the
simulator's export has the columns of :data:`CDR_COLUMNS`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

__all__ = ["CDR_COLUMNS", "TIME_FORMAT", "SimulatedCall", "newcdr_report", "render_cdr_csv"]

#: How the PBX writes and reads local times (``timestart``, the CDR query's window).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: Column order of the CDR CSV (the vendor does not publish it; clients must parse by header).
CDR_COLUMNS: tuple[str, ...] = (
    "callid",
    "timestart",
    "callfrom",
    "callto",
    "callduraction",
    "talkduraction",
    "srctrunkname",
    "desttrunkname",
    "status",
    "type",
    "recording",
    "didnumber",
    "sn",
)


@dataclass(frozen=True)
class SimulatedCall:
    """A call placed with :meth:`PbxSimulator.place_call`.

    ``recording`` is None (and ``size`` 0, ``sha256`` None) when the call was not recorded.
    ``report`` is the NewCdr report exactly as pushed (all values strings); ``cdr`` is the
    row of the CDR CSV.
    """

    callid: str
    cdrid: str
    recording: str | None
    size: int
    sha256: str | None
    report: dict[str, str]
    cdr: dict[str, str]
    timestart: dt.datetime


def newcdr_report(cdr: dict[str, str], cdrid: str, report_style: str) -> dict[str, str]:
    """The NewCdr report of a CDR row: ``"action"`` (``v1``) or ``"event"`` (``v2``), then the row's fields.

    ``cdrid`` goes just before ``sn``; ``recording`` is absent, not empty, when the call was not recorded.
    """
    report: dict[str, str] = {"action" if report_style == "v1" else "event": "NewCdr"}
    for key in CDR_COLUMNS:
        if key == "recording" and not cdr[key]:
            continue
        if key == "sn":
            report["cdrid"] = cdrid
        report[key] = cdr[key]
    return report


def render_cdr_csv(rows: list[dict[str, str]]) -> bytes:
    """The simulator's CDR export: a header row of :data:`CDR_COLUMNS`, then one row a call."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CDR_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in CDR_COLUMNS])
    return buf.getvalue().encode("utf-8")
