"""Reading a PBX's CDR CSV (seed 004) by its header row.

The vendor does not publish the columns, so nothing here relies on their order or on every
column being there: headers are matched without regard to case, spaces, underscores or dashes,
the names of the NewCdr report (``callid``, ``timestart``, ``recording`` …) and a few common
variants (``call id``, ``start time``, ``recording file``) are understood, and every other
column is ignored. What cannot be read is reported, row by row, never raised: a PBX's odd
export must not stop the rows around it from being reconciled. Only a CSV that cannot say
which calls were recorded (no call id or no recording column) is refused as a whole.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from callvault.errors import PermanentFailure

# Canonical field (the NewCdr name) → header spellings that mean it, already normalised.
ALIASES: dict[str, tuple[str, ...]] = {
    "callid": ("callid", "uniqueid", "callidentifier"),
    "cdrid": ("cdrid",),
    "timestart": ("timestart", "starttime", "calltime", "time", "date", "calldate"),
    "callfrom": ("callfrom", "from", "caller", "src"),
    "callto": ("callto", "to", "callee", "dst"),
    "callduraction": ("callduraction", "callduration", "duration"),
    "talkduraction": ("talkduraction", "talkduration", "billsec"),
    "status": ("status", "disposition"),
    "type": ("type", "calltype", "communicationtype"),
    "recording": ("recording", "recordingfile", "recordfile", "recordingname"),
    "srctrunkname": ("srctrunkname", "sourcetrunk"),
    "desttrunkname": ("desttrunkname", "destinationtrunk"),
    "didnumber": ("didnumber", "did"),
    "sn": ("sn",),
}
_BY_SPELLING = {spelling: canonical for canonical, spellings in ALIASES.items() for spelling in spellings}
# Reported problems are capped: a broken export must not turn into a megabyte of log.
MAX_PROBLEMS = 20


def _printable(text: str) -> str:
    """A header as it may appear in a reason: no control characters, no endless length."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= 40 else cleaned[:39] + "…"


def normalise_header(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.strip().lstrip("\ufeff")).lower()


@dataclass
class CdrTable:
    """Rows as ``(line number, {canonical field: value})``, and what could not be read."""

    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("more problems not shown")


def decode(data: bytes) -> str:
    """UTF-8 (with or without a BOM); PBXs set up for Chinese may export GB18030 instead."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


def parse_cdr_csv(data: bytes) -> CdrTable:
    """The CSV as rows of canonical fields; raises PermanentFailure when it cannot tell which
    calls were recorded (no call id or recording column, or no header at all)."""
    table = CdrTable()
    reader = csv.reader(io.StringIO(decode(data), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise PermanentFailure(f"CDR CSV header cannot be read: {exc}") from None
    if not header or not any(cell.strip() for cell in header):
        if data.strip():
            raise PermanentFailure("CDR CSV has no header row")
        return table  # an empty export: no calls in the window
    table.columns = [cell.strip() for cell in header]
    fields: list[str | None] = []
    for cell in header:
        name = _BY_SPELLING.get(normalise_header(cell))
        fields.append(name if name not in fields else None)  # the first of two spellings wins
    missing = [name for name in ("recording", "timestart") if name not in fields]
    if "callid" not in fields and "cdrid" not in fields:
        missing.insert(0, "callid")
    if missing:
        shown = ", ".join(_printable(column) for column in table.columns[:12]) or "none"
        raise PermanentFailure(f"CDR CSV has no {' or '.join(missing)} column (columns: {shown})")
    line = 1
    try:
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < len(header):
                table.problem(f"line {line}: {len(cells)} of {len(header)} columns (a truncated line?); skipped")
                continue
            row = {name: cell.strip() for name, cell in zip(fields, cells, strict=False) if name}
            table.rows.append((line, row))
    except csv.Error as exc:
        table.problem(f"line {line + 1}: unreadable ({exc}); the rest of the file is skipped")
    return table
