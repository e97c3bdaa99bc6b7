"""Matroska (``.mkv``) audio files for the simulators: what CCC's dual-track recordings look like."""

from __future__ import annotations

from local.simulators.wav import make_wav

__all__ = ["matroska_audio"]


def _vint(n: int) -> bytes:
    """EBML variable-size integer for an element size."""
    for width in range(1, 9):
        if n < (1 << (7 * width)) - 1:
            return (n | (1 << (7 * width))).to_bytes(width, "big")
    raise ValueError("element too large")


def _element(element_id: int, payload: bytes) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + _vint(len(payload)) + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def matroska_audio(duration_s: float, *, seed: str) -> bytes:
    """A structurally valid Matroska file: EBML header, Segment, and the stereo PCM in a Void.

    Real dual-track recordings are Matroska; clients may sniff the EBML magic
    (``1A 45 DF A3``).  The audio rides in a Void element (legal anywhere, ignored by
    demuxers): the size and byte-exactness are what the archive path exercises.
    """
    header = _element(
        0x1A45DFA3,
        _uint(0x4286, 1)  # EBMLVersion
        + _uint(0x42F7, 1)  # EBMLReadVersion
        + _uint(0x42F2, 4)  # EBMLMaxIDLength
        + _uint(0x42F3, 8)  # EBMLMaxSizeLength
        + _element(0x4282, b"matroska")  # DocType
        + _uint(0x4287, 4)  # DocTypeVersion
        + _uint(0x4285, 2),  # DocTypeReadVersion
    )
    pcm = make_wav(duration_s, seed=seed, channels=2)[44:]
    unknown_size = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # a live-recorded Segment has an unknown size
    return header + bytes.fromhex("18538067") + unknown_size + _element(0xEC, pcm)
