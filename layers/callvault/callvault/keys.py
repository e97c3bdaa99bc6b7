"""S3 object keys, built only from sanitised parts (never a provider string as-is)."""

from __future__ import annotations

import re
from datetime import datetime

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_PART = 120


def safe_part(value: str) -> str:
    """A key segment: letters, digits, ``._-`` only; no leading dots; never empty."""
    cleaned = UNSAFE.sub("_", value).lstrip(".")[:MAX_PART]
    return cleaned or "_"


def recording_key(source_id: str, call_time: str, call_id: str, file_name: str) -> str:
    """``recordings/{source}/{yyyy}/{mm}/{dd}/{call}/{file}``; the date is the call's local date."""
    day = datetime.fromisoformat(call_time)
    return "/".join(
        (
            "recordings",
            safe_part(source_id),
            f"{day:%Y}",
            f"{day:%m}",
            f"{day:%d}",
            safe_part(call_id),
            safe_part(file_name),
        )
    )


CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".mkv": "audio/x-matroska",
    ".ogg": "audio/ogg",
    ".gsm": "audio/gsm",
    ".m4a": "audio/mp4",
}


def content_type_for(file_name: str, declared: str | None) -> str:
    """The provider's declared audio type if it gave one, else by extension."""
    if declared and declared.split(";")[0].strip().lower().startswith(("audio/", "video/")):
        return declared.split(";")[0].strip()
    for suffix, content_type in CONTENT_TYPES.items():
        if file_name.lower().endswith(suffix):
            return content_type
    return "application/octet-stream"
