"""Fast, deterministic WAV generator for the telephony simulators.

Real call recordings are several megabytes (8 kHz, 16-bit PCM is 16 kB per second per
channel), and tests create many of them, so synthesising every sample with ``math.sin``
would cost seconds per file.  Instead a handful of one-second tone blocks are computed
once per format and cached; a file is a seeded sequence of those blocks.  A seed-derived
stamp in the first samples makes every file's bytes (and so its sha256) distinct even
when two calls pick the same block sequence.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import sys
from array import array
from functools import lru_cache

__all__ = ["make_wav", "wav_header", "wav_info"]

# Telephone-ish tones (Hz) and amplitudes; the mix is arbitrary, only variety matters.
_TONES: tuple[tuple[float, float], ...] = (
    (350.0, 0.30),
    (440.0, 0.25),
    (480.0, 0.28),
    (620.0, 0.20),
    (697.0, 0.22),
    (770.0, 0.18),
    (852.0, 0.24),
    (941.0, 0.26),
)
_SILENCE_INDEX = len(_TONES)  # an extra all-zero block: real calls have pauses


def wav_header(data_len: int, *, sample_rate: int = 8000, channels: int = 1, bits: int = 16) -> bytes:
    """Return the 44-byte canonical RIFF/WAVE (PCM) header for ``data_len`` bytes of samples."""
    block_align = channels * bits // 8
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_len),
            b"WAVE",
            b"fmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, bits),
            b"data",
            struct.pack("<I", data_len),
        )
    )


@lru_cache(maxsize=8)
def _blocks(sample_rate: int, channels: int) -> tuple[bytes, ...]:
    """One second of little-endian 16-bit PCM per tone, plus one second of silence.

    Stereo puts a different tone on each channel (caller left, callee right), like a PBX
    that records both legs separately.
    """
    out: list[bytes] = []
    n_tones = len(_TONES)
    for i in range(n_tones + 1):
        if i == _SILENCE_INDEX:
            out.append(bytes(sample_rate * channels * 2))
            continue
        chans: list[array[int]] = []
        for c in range(channels):
            freq, amp = _TONES[(i + 3 * c) % n_tones]
            scale = amp * 32767.0
            step = 2.0 * math.pi * freq / sample_rate
            chans.append(array("h", (int(scale * math.sin(step * k)) for k in range(sample_rate))))
        if channels == 1:
            pcm = chans[0]
        else:
            pcm = array("h", bytes(sample_rate * channels * 2))
            for c in range(channels):
                pcm[c::channels] = chans[c]
        if sys.byteorder != "little":  # WAV is little-endian whatever the host is
            pcm.byteswap()
        out.append(pcm.tobytes())
    return tuple(out)


def make_wav(
    duration_s: float,
    *,
    seed: str | int = 0,
    sample_rate: int = 8000,
    channels: int = 1,
) -> bytes:
    """Build a complete WAV file (16-bit PCM) of ``duration_s`` seconds.

    The same ``seed`` and format always yield the same bytes.  A 3-minute mono file is
    about 2.9 MB and takes a few milliseconds.
    """
    if duration_s < 0:
        raise ValueError("duration_s must be >= 0")
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    blocks = _blocks(sample_rate, channels)
    frame = channels * 2
    total = round(duration_s * sample_rate) * frame
    rng = random.Random(f"wav:{seed}")
    whole, rest = divmod(total, sample_rate * frame)
    # Mostly tones with an occasional silent second, as in a conversation.
    weights = [6] * len(_TONES) + [2]
    indices = rng.choices(range(len(blocks)), weights=weights, k=whole + (1 if rest else 0))
    parts = [blocks[i] for i in indices[:whole]]
    if rest:
        parts.append(blocks[indices[-1]][:rest])
    data = bytearray(b"".join(parts))
    # Stamp the opening samples with seed-derived noise so every file hashes differently.
    stamp = hashlib.sha256(f"stamp:{seed}".encode()).digest()
    n = min(len(stamp), len(data)) & ~1
    data[:n] = stamp[:n]
    return wav_header(len(data), sample_rate=sample_rate, channels=channels) + bytes(data)


def wav_info(blob: bytes) -> tuple[int, int, int, float]:
    """Parse a canonical WAV header: ``(sample_rate, channels, bits, duration_s)``.

    Raises ``ValueError`` if ``blob`` does not start with a RIFF/WAVE PCM header.
    """
    if len(blob) < 44 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE" or blob[12:16] != b"fmt ":
        raise ValueError("not a RIFF/WAVE file")
    _size, fmt, channels, rate, byte_rate, _align, bits = struct.unpack("<IHHIIHH", blob[16:36])
    if fmt != 1:
        raise ValueError("not PCM")
    if blob[36:40] != b"data":
        raise ValueError("unexpected chunk layout")
    (data_len,) = struct.unpack("<I", blob[40:44])
    return rate, channels, bits, data_len / byte_rate
