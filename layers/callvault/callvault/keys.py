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


# Beside each call's recordings: its metadata sidecar (callvault.announcements).
SIDECAR_NAME = "call.json"
RECORDINGS_PREFIX = "recordings/"
# The call catalogue: a copy of every sidecar under a tree of its own, which the Athena table
# reads (it holds no audio, so a query never scans recordings).
CATALOG_PREFIX = "calls/"


def _day_path(source_id: str, call_time: str) -> str:
    day = datetime.fromisoformat(call_time)
    return f"{safe_part(source_id)}/{day:%Y}/{day:%m}/{day:%d}"


def call_folder(source_id: str, call_time: str, call_id: str) -> str:
    """``recordings/{source}/{yyyy}/{mm}/{dd}/{call}/``; the date is the call's local date."""
    return f"{RECORDINGS_PREFIX}{_day_path(source_id, call_time)}/{safe_part(call_id)}/"


def recording_key(source_id: str, call_time: str, call_id: str, file_name: str) -> str:
    """``recordings/{source}/{yyyy}/{mm}/{dd}/{call}/{file}``; a recording the provider happens to
    call ``call.json`` gets a distinct name, so it never meets the sidecar."""
    name = safe_part(file_name)
    if name.lower() == SIDECAR_NAME:
        name = f"call~{hashlib.sha256(file_name.encode()).hexdigest()[:8]}.json"
    return call_folder(source_id, call_time, call_id) + name


def sidecar_key(source_id: str, call_time: str, call_id: str) -> str:
    return call_folder(source_id, call_time, call_id) + SIDECAR_NAME


def catalog_key(source_id: str, call_time: str, call_id: str) -> str:
    """``calls/{source}/{yyyy}/{mm}/{dd}/{call}.json``: the layout the Athena table projects."""
    return f"{CATALOG_PREFIX}{_day_path(source_id, call_time)}/{safe_part(call_id)}.json"


def catalog_key_of_folder(folder: str) -> str:
    """The catalogue copy of the sidecar of the call whose folder this is."""
    return CATALOG_PREFIX + folder.removeprefix(RECORDINGS_PREFIX).rstrip("/") + ".json"


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
