"""The bytes every transfer benchmark moves: generated per chunk, never held whole.

A file of ``size`` bytes is a run of 1 MiB blocks; block ``n`` is a fixed pseudo-random MiB whose
first eight bytes are ``n`` (big-endian), so no two blocks are alike (nothing deduplicates or
compresses it) and any byte range can be produced on its own, for a ``Range`` request or a
resumed read, at memcpy speed. The file server and the upload-only peer serve the same bytes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from functools import cache

BLOCK = 1024 * 1024
_SEED = 20261202


@cache
def _pattern() -> bytes:
    return random.Random(_SEED).randbytes(BLOCK)


def block(index: int) -> bytes:
    """Block ``index`` of every generated file (a file's last block is cut to its size)."""
    return index.to_bytes(8, "big") + _pattern()[8:]


def byte_range(start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a generated file, in pieces of at most one block."""
    position = start
    while position < end:
        index, offset = divmod(position, BLOCK)
        piece = block(index)[offset : offset + (end - position)]
        yield piece
        position += len(piece)


def sha256_of(size: int) -> str:
    """The sha256 a generated file of ``size`` bytes must have once stored."""
    digest = hashlib.sha256()
    for piece in byte_range(0, size):
        digest.update(piece)
    return digest.hexdigest()


class GeneratedFile:
    """A generated file as a read-only, non-seekable file object (what a streamed source is)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        data = b"".join(byte_range(self._position, end))
        self._position = end
        return data
