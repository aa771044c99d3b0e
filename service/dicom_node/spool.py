"""The spool: received instances on disk until their study's read ends.

Layout (no UID appears in a path; every file 0600, every folder 0700):

    ROOT/<batch>/state.json        the batch's study UID, calling AEs, state, read id
    ROOT/<batch>/<sha256(SOP UID)>.dcm   one Part 10 file per instance
    ROOT/triggers/<sha256(study UID)>    an explicit "the study is complete"

A batch is one arrival of one study. Its states:

    receiving --(quiet period over, or a trigger)--> ready --(claimed by a read)--> reading
    reading --(the read ended)--> done --(retention over)--> deleted

An instance of a study whose batch is past `receiving` opens a new batch (a late
series is a new arrival, read on its own). Semantics the node relies on:
- `store` is thread-safe (every association has its thread) and all-or-nothing:
  the file is written under a temporary name and renamed; bytes are reserved
  against the quota first, so a full spool raises `SpoolFull` before anything is
  written (the SCP answers 0xA700 Out of Resources).
- The state lives on disk: `open()` rebuilds it after a crash (kill -9 included):
  temporary files are removed, a batch's last arrival is its newest file's mtime,
  so its quiet period runs on from where it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

BatchState = Literal["receiving", "ready", "reading", "done"]
STATE_FILE = "state.json"
TRIGGERS = "triggers"
SUFFIX = ".dcm"


class SpoolFull(Exception):
    """The quota (or a study's instance limit) leaves no room for this instance."""


def uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()


@dataclass
class Batch:
    id: str
    study_instance_uid: str
    calling_aes: list[str] = field(default_factory=list)
    state: BatchState = "receiving"
    read_id: str | None = None
    ended: float | None = None  # when its read ended (retention counts from here)
    # in memory only (rebuilt from the files on open)
    last: float = 0.0
    instances: int = 0
    bytes: int = 0
    writing: int = 0  # instances being written now (the quiet period waits for them)

    def record(self) -> dict[str, object]:
        data = asdict(self)
        for name in ("last", "instances", "bytes", "writing"):
            data.pop(name)
        return data


def _write_private(path: Path, data: bytes) -> None:
    """`path` replaced atomically by `data`, readable by this user only."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class Spool:
    def __init__(
        self,
        root: Path,
        max_bytes: int,
        quiet_seconds: float,
        retention_seconds: float = 0.0,
        max_study_instances: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.quiet_seconds = quiet_seconds
        self.retention_seconds = retention_seconds
        self.max_study_instances = max_study_instances
        self.clock = clock
        self.used = 0
        self._batches: dict[str, Batch] = {}
        self._receiving: dict[str, str] = {}  # study UID -> its receiving batch
        self._lock = threading.Lock()

    # start-up

    def open(self) -> Spool:
        """Creates the root (0700) and rebuilds the state from what is on disk."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        (self.root / TRIGGERS).mkdir(exist_ok=True, mode=0o700)
        with self._lock:
            self._batches.clear()
            self._receiving.clear()
            self.used = 0
            for folder in sorted(self.root.iterdir()):
                if folder.name == TRIGGERS or not folder.is_dir():
                    continue
                batch = self._recover(folder)
                if batch is None:
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                self._batches[batch.id] = batch
                self.used += batch.bytes
                if batch.state == "receiving":
                    self._receiving[batch.study_instance_uid] = batch.id
        return self

    def _recover(self, folder: Path) -> Batch | None:
        try:
            record = json.loads((folder / STATE_FILE).read_text())
            batch = Batch(**record)
        except (OSError, ValueError, TypeError):
            return None  # killed before its first instance was in place
        for path in folder.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write the crash interrupted
            elif path.suffix == SUFFIX:
                stat = path.stat()
                batch.instances += 1
                batch.bytes += stat.st_size
                batch.last = max(batch.last, stat.st_mtime)
        if batch.instances == 0:
            return None
        return batch

    # receiving (any thread)

    def store(self, data: bytes, study_uid: str, sop_uid: str, calling_ae: str) -> Batch:
        """Writes one instance into its study's receiving batch; raises SpoolFull."""
        size = len(data)
        name = uid_hash(sop_uid) + SUFFIX
        with self._lock:
            batch_id = self._receiving.get(study_uid)
            batch = self._batches[batch_id] if batch_id is not None else None
            path = self.root / batch.id / name if batch is not None else None
            old = path.stat().st_size if path is not None and path.exists() else None
            if batch is not None and batch.instances >= self.max_study_instances and old is None:
                raise SpoolFull("the study holds the most instances allowed")
            if self.used - (old or 0) + size > self.max_bytes:
                raise SpoolFull("the spool is full")
            if batch is None:
                batch = self._new_batch(study_uid)
                path = self.root / batch.id / name
            self.used += size - (old or 0)  # reserved before the write
            batch.writing += 1
            batch.last = self.clock()
            if calling_ae not in batch.calling_aes:
                batch.calling_aes.append(calling_ae)
                self._save(batch)
        assert path is not None
        try:
            _write_private(path, data)
        except BaseException:
            with self._lock:
                self.used -= size - (old or 0)
                batch.writing -= 1
            raise
        with self._lock:
            batch.writing -= 1
            if old is None:
                batch.instances += 1
            batch.bytes += size - (old or 0)
            batch.last = self.clock()
        return batch

    def _new_batch(self, study_uid: str) -> Batch:
        batch = Batch(id=uuid.uuid4().hex, study_instance_uid=study_uid, last=self.clock())
        (self.root / batch.id).mkdir(mode=0o700)
        self._save(batch)
        self._batches[batch.id] = batch
        self._receiving[study_uid] = batch.id
        return batch

    def _save(self, batch: Batch) -> None:
        _write_private(self.root / batch.id / STATE_FILE, json.dumps(batch.record()).encode())

    # completeness

    def trigger(self, study_uid: str) -> None:
        """Marks a study complete now (also from another process: a file in the spool)."""
        (self.root / TRIGGERS).mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(self.root / TRIGGERS / uid_hash(study_uid), b"")

    def take_ready(self) -> list[Batch]:
        """Batches whose quiet period is over or whose study was triggered: now `ready`."""
        now = self.clock()
        triggers = {p.name for p in (self.root / TRIGGERS).iterdir()}
        ready = []
        with self._lock:
            for study_uid, batch_id in list(self._receiving.items()):
                batch = self._batches[batch_id]
                triggered = uid_hash(study_uid) in triggers
                if batch.writing:
                    continue
                if triggered or now - batch.last >= self.quiet_seconds:
                    batch.state = "ready"
                    self._save(batch)
                    del self._receiving[study_uid]
                    ready.append(batch)
                if triggered:
                    (self.root / TRIGGERS / uid_hash(study_uid)).unlink(missing_ok=True)
        return ready

    def pending(self) -> list[Batch]:
        """Batches that are ready or reading (after a restart: the reads to resume)."""
        with self._lock:
            return [b for b in self._batches.values() if b.state in ("ready", "reading")]

    def files(self, batch: Batch) -> list[Path]:
        return sorted((self.root / batch.id).glob("*" + SUFFIX))

    def reading(self, batch: Batch, read_id: str) -> None:
        with self._lock:
            batch.state, batch.read_id = "reading", read_id
            self._save(batch)

    def done(self, batch: Batch) -> None:
        """The batch's read ended (or it is ignored): its files go after the retention."""
        with self._lock:
            batch.state, batch.ended = "done", self.clock()
            self._save(batch)
        if self.retention_seconds <= 0:
            self._delete(batch)

    def sweep(self) -> int:
        """Deletes the done batches whose retention is over; returns how many."""
        now = self.clock()
        with self._lock:
            old = [
                b
                for b in self._batches.values()
                if b.state == "done" and b.ended is not None
                and now - b.ended >= self.retention_seconds
            ]  # fmt: skip
        for batch in old:
            self._delete(batch)
        return len(old)

    def _delete(self, batch: Batch) -> None:
        shutil.rmtree(self.root / batch.id, ignore_errors=True)
        with self._lock:
            if self._batches.pop(batch.id, None) is not None:
                self.used -= batch.bytes

    def batches(self) -> list[Batch]:
        with self._lock:
            return list(self._batches.values())
