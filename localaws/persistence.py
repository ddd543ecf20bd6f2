"""Keep a local stage's state across ``kill -9`` and ``down`` / ``up``: a write-ahead journal and snapshots.

:class:`LocalStore` (used by :class:`localaws.LocalAws` with ``persist=True``, i.e. ``sluice local
up``) keeps under ``<state_dir>/data``:

- ``journal.log``: every write the local AWS acknowledged since the last snapshot, each appended
  and fsynced before its response left (:mod:`localaws.journal.capture`);
- ``snapshot.log``: what the last clean ``down`` compacted the journal into (objects, items and
  the other records; :mod:`localaws.journal.snapshot`), replaced atomically;
- ``names.json``: the physical names CloudFormation generated, handed out again on every ``up``.

``up`` creates the stacks, replays the snapshot and then the journal's records it does not hold,
and only then journals new writes. ``--fresh`` deletes ``data``.

:func:`save_data` and :func:`restore_data` copy bucket objects and table items by stack and
logical id (a portable export of the stage's data).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localaws.journal import capture, names, snapshot
from localaws.journal.log import JournalFile, fsync_directory, read_records
from localaws.journal.replay import Replayer, ReplayResult

if TYPE_CHECKING:
    from localaws.env import LocalAws

DATA_DIR = "data"
JOURNAL_FILE = "journal.log"
SNAPSHOT_FILE = "snapshot.log"
NAMES_FILE = "names.json"
log = logging.getLogger("localaws.persistence")


def journal_wanted(persist: bool) -> bool:
    """Whether a stage journals: ``persist``, unless ``SLUICE_LOCAL_JOURNAL`` says ``1`` or ``0``.

    The variable exists to measure the journal's cost (``bench_local``, ``make demo``); with ``0``
    a killed ``local up`` loses its state again.
    """
    switch = os.environ.get("SLUICE_LOCAL_JOURNAL", "")
    return {"1": True, "0": False}.get(switch, persist)


def install() -> None:
    """The journal's moto patches (idempotent; inert until a :class:`LocalStore` recovers)."""
    names.install()
    capture.install()


class LocalStore:
    """The journal and snapshot of one local stage (``<state_dir>/data``).

    Call :meth:`pin_names` before the stacks are created, :meth:`recover` right after, and
    :meth:`compact` (clean stop) or :meth:`close` when the stage stops.

    Parameters
    ----------
    local
        The stage being started.
    fsync
        False appends without ``fdatasync`` (``SLUICE_LOCAL_JOURNAL_FSYNC=0``, for measuring its cost).
    """

    def __init__(self, local: LocalAws, *, fsync: bool | None = None) -> None:
        self.local = local
        self.root = local.state_dir / DATA_DIR
        self.fsync = os.environ.get("SLUICE_LOCAL_JOURNAL_FSYNC", "1") != "0" if fsync is None else fsync
        self.file: JournalFile | None = None
        self.replayed = ReplayResult()

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_FILE

    @property
    def snapshot_path(self) -> Path:
        return self.root / SNAPSHOT_FILE

    def pin_names(self) -> None:
        """Give the stacks' resources the names they had before (or remember the new ones)."""
        path = self.root / NAMES_FILE
        names.pin(json.loads(path.read_text()) if path.is_file() else {})

    def recover(self) -> ReplayResult:
        """Replay the snapshot and the journal onto the new stacks, then journal every new write."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / NAMES_FILE, json.dumps(names.pinned(), indent=1, sort_keys=True).encode())
        covered = snapshot.covered(self.snapshot_path)
        last = covered
        replayer = Replayer(
            endpoint_url=self.local.endpoint_url, account=self.local.account, region=self.local.region
        )
        try:
            replayer.apply_all(snapshot.records(self.snapshot_path))
            for header, body, _ in read_records(self.journal_path):
                last = max(last, int(header.get("seq", 0)))
                if int(header.get("seq", 0)) > covered:
                    replayer.apply(header, body)
        finally:
            replayer.close()
        self.replayed = replayer.result
        if self.replayed.failed:
            log.warning("%d journal records could not be replayed", len(self.replayed.failed))
        self.file = JournalFile(self.journal_path, next_seq=last + 1, fsync=self.fsync)
        capture.activate(self.file, account=self.local.account)
        return self.replayed

    def compact(self) -> int:
        """Write a snapshot of the state (atomic replace), then drop the journal; returns its records."""
        active = capture.active()
        if self.file is None:
            capture.deactivate()
            return 0
        # Under the order lock no journaled request is between its write and its record; once
        # the file is closed, a write that could no longer be journaled fails instead.
        with active.order if active is not None else contextlib.nullcontext():
            self.file.close()
            capture.deactivate()
        covered = self.file.last_seq
        journal = ((h, b) for h, b, _ in read_records(self.journal_path))
        kept = snapshot.kept_records(itertools.chain(snapshot.records(self.snapshot_path), journal))
        count = snapshot.write(self.snapshot_path, covered_seq=covered, kept=kept)
        self.journal_path.unlink(missing_ok=True)
        fsync_directory(self.root)
        self.file = None
        return count

    def close(self) -> None:
        """Stop journaling, leaving the journal as it is (the next ``up`` replays it)."""
        capture.deactivate()
        names.unpin()
        if self.file is not None:
            self.file.close()
            self.file = None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def _data_resources(local: LocalAws) -> list[tuple[str, Any]]:
    return [
        (stack.stack_name, r)
        for stack in local.deployed
        for r in stack.resources
        if r.resource_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table") and r.physical_id
    ]


def save_data(local: LocalAws) -> Path:
    """Save the objects of the stage's buckets and the items of its tables under ``state_dir/data``.

    Keyed by stack and logical id, so a later run restores them whatever the physical names.
    """
    root = local.state_dir / DATA_DIR
    staging = local.state_dir / f"{DATA_DIR}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    s3, ddb = local.client("s3"), local.client("dynamodb")
    for stack_name, resource in _data_resources(local):
        target = staging / stack_name / resource.logical_id
        if resource.resource_type == "AWS::S3::Bucket":
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=resource.physical_id):
                for obj in page.get("Contents", []):
                    path = target / "objects" / obj["Key"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(
                        s3.get_object(Bucket=resource.physical_id, Key=obj["Key"])["Body"].read()
                    )
        else:
            target.mkdir(parents=True, exist_ok=True)
            with open(target / "items.jsonl", "w") as out:
                for page in ddb.get_paginator("scan").paginate(TableName=resource.physical_id):
                    for item in page.get("Items", []):
                        out.write(json.dumps(item) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    staging.rename(root)
    return root


def restore_data(local: LocalAws) -> int:
    """Put back what :func:`save_data` saved; returns the number of objects and items restored."""
    root = local.state_dir / DATA_DIR
    if not root.is_dir():
        return 0
    s3, ddb = local.client("s3"), local.client("dynamodb")
    restored = 0
    for stack_name, resource in _data_resources(local):
        source = root / stack_name / resource.logical_id
        if resource.resource_type == "AWS::S3::Bucket":
            objects = source / "objects"
            for path in sorted(objects.rglob("*")) if objects.is_dir() else []:
                if path.is_file():
                    key = path.relative_to(objects).as_posix()
                    s3.put_object(Bucket=resource.physical_id, Key=key, Body=path.read_bytes())
                    restored += 1
        elif (source / "items.jsonl").is_file():
            for line in (source / "items.jsonl").read_text().splitlines():
                ddb.put_item(TableName=resource.physical_id, Item=json.loads(line))
                restored += 1
    return restored
