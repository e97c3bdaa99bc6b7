"""S3 object keys, built only from sanitised parts (never a provider string as-is)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")
MAX_PART = 120


def safe_part(value: str) -> str:
    """A key segment: letters, digits, ``._-`` only; no leading dots; never empty.

    A name that had to change gets a short hash of the original before its extension, so two
    different provider names ("a b.wav", "a_b.wav") can never land on one key.
    """
    cleaned = UNSAFE.sub("_", value).lstrip(".")
    if cleaned == value and value and len(value) <= MAX_PART:
        return value
    stem, dot, extension = cleaned.rpartition(".")
    if not dot or not stem or not EXTENSION.fullmatch(extension):
        stem, extension = cleaned, ""
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{stem[: MAX_PART - 18] or '_'}~{digest}{'.' + extension if extension else ''}"


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
