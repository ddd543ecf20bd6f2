"""The journal file: length-prefixed, checksummed records, appended and fsynced with group commit.

A record is ``b"SJ"``, the header length (4 bytes), the body length (8 bytes), the CRC-32 of
header and body (4 bytes), the header (JSON) and the body (raw bytes). A process killed in the
middle of an append leaves a torn last record; :func:`read_records` stops before it, and
:class:`JournalFile` cuts it off before appending, so the file stays a clean sequence of whole
records. Nothing is acknowledged before its record is on disk: :meth:`JournalFile.sync` returns
once ``fdatasync`` covered it, and concurrent callers share one ``fdatasync`` (group commit).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"SJ"
_PREFIX = struct.Struct(">2sIQI")


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One record's bytes."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, len(head), len(body), zlib.crc32(body, zlib.crc32(head))) + head + body


def read_records(path: Path) -> Iterator[tuple[dict[str, Any], bytes, int]]:
    """``(header, body, end offset)`` of each whole record of ``path``, in order; stops at a torn tail."""
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        offset = 0
        while True:
            prefix = handle.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                return
            magic, head_len, body_len, crc = _PREFIX.unpack(prefix)
            head, body = handle.read(head_len), handle.read(body_len)
            if magic != MAGIC or len(head) < head_len or len(body) < body_len:
                return
            if zlib.crc32(body, zlib.crc32(head)) != crc:
                return
            offset += _PREFIX.size + head_len + body_len
            yield json.loads(head), body, offset


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalFile:
    """An append-only journal: :meth:`append` numbers and writes a record, :meth:`sync` makes it durable.

    Parameters
    ----------
    path
        The file; a torn last record left by a crash is cut off first.
    next_seq
        The sequence number of the first record appended (sequence numbers keep growing over
        snapshots, so a snapshot can say which records it already holds).
    fsync
        False skips ``fdatasync`` (for measuring its cost only).
    """

    def __init__(self, path: Path, *, next_seq: int, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        end = 0
        for record in read_records(path):
            end = record[2]
        if path.exists() and path.stat().st_size != end:
            os.truncate(path, end)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_directory(path.parent)
        self._next = next_seq
        self._written = next_seq - 1
        self._synced = next_seq - 1
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.appended = 0

    @property
    def last_seq(self) -> int:
        return self._next - 1

    def append(self, header: dict[str, Any], body: bytes = b"") -> int:
        """Write one record (not yet durable) and return its sequence number."""
        with self._lock:
            if self._fd < 0:
                raise RuntimeError(f"the journal {self.path} is closed (the local stage is stopping)")
            seq = self._next
            record = encode({"seq": seq, **header}, body)
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view) :]
            self._next += 1
            self._written = seq
            self.appended += 1
        return seq

    def sync(self, seq: int) -> None:
        """Return once record ``seq`` (and every earlier one) is on disk."""
        if self._synced >= seq:
            return
        with self._sync_lock:
            if self._synced >= seq:
                return
            target = self._written
            if self.fsync:
                os.fdatasync(self._fd)
            self._synced = target

    def close(self) -> None:
        """Make every appended record durable and refuse further appends (idempotent)."""
        with self._lock, self._sync_lock:
            if self._fd >= 0:
                if self.fsync:
                    os.fdatasync(self._fd)
                self._synced = self._written
                os.close(self._fd)
                self._fd = -1
