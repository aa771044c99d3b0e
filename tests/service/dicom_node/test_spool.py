"""The spool on a real disk: quota, modes, readiness, triggers, crash recovery."""

from __future__ import annotations

import os
import stat

import pytest

from service.dicom_node.spool import Spool, SpoolFull


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spool(tmp_path, clock, **kw) -> Spool:
    args = {"max_bytes": 1000, "quiet_seconds": 5.0} | kw
    return Spool(tmp_path / "spool", clock=clock, **args).open()


def test_files_and_folders_are_private(tmp_path):
    s = spool(tmp_path, Clock())
    batch = s.store(b"x" * 10, "1.2.3", "1.2.3.4", "ORTHANC")
    assert stat.S_IMODE(os.stat(s.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(s.root / batch.id).st_mode) == 0o700
    for path in (s.root / batch.id).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "1.2.3" not in path.name  # no UID in any path


def test_quota_refuses_before_writing_and_resends_replace(tmp_path):
    s = spool(tmp_path, Clock(), max_bytes=100)
    s.store(b"a" * 60, "1.2", "1.2.1", "A")
    with pytest.raises(SpoolFull):
        s.store(b"b" * 50, "1.2", "1.2.2", "A")
    assert s.used == 60
    s.store(b"c" * 90, "1.2", "1.2.1", "A")  # the same instance again: replaced
    assert s.used == 90
    assert len(s.files(s.batches()[0])) == 1
    with pytest.raises(SpoolFull):
        s.store(b"d" * 20, "9.9", "9.9.1", "A")  # a new study: no batch left behind
    assert len(s.batches()) == 1


def test_quiet_period_then_ready_once(tmp_path):
    clock = Clock()
    s = spool(tmp_path, clock)
    s.store(b"1", "1.2", "1.2.1", "A")
    clock.now += 4
    s.store(b"2", "1.2", "1.2.2", "B")
    clock.now += 4
    assert s.take_ready() == []  # 4 s since the last instance
    clock.now += 1
    [batch] = s.take_ready()
    assert batch.state == "ready" and batch.calling_aes == ["A", "B"] and batch.instances == 2
    assert s.take_ready() == []
    # a late instance of the same study opens a new batch
    late = s.store(b"3", "1.2", "1.2.3", "A")
    assert late.id != batch.id


def test_trigger_makes_a_study_ready_at_once(tmp_path):
    s = spool(tmp_path, Clock(), quiet_seconds=3600)
    s.store(b"1", "1.2", "1.2.1", "A")
    s.store(b"1", "7.7", "7.7.1", "A")
    Spool(s.root, 1000, 3600).trigger("1.2")  # another process writes the trigger
    [batch] = s.take_ready()
    assert batch.study_instance_uid == "1.2"


def test_done_deletes_now_or_after_retention(tmp_path):
    clock = Clock()
    s = spool(tmp_path, clock, retention_seconds=60)
    batch = s.store(b"x" * 10, "1.2", "1.2.1", "A")
    clock.now += 10
    s.take_ready()
    s.reading(batch, "read_1")
    s.done(batch)
    assert (s.root / batch.id).exists() and s.used == 10
    clock.now += 59
    assert s.sweep() == 0
    clock.now += 1
    assert s.sweep() == 1
    assert not (s.root / batch.id).exists() and s.used == 0


def test_recovery_after_a_crash(tmp_path):
    clock = Clock()
    s = spool(tmp_path, clock)
    receiving = s.store(b"r" * 5, "1.1", "1.1.1", "A")
    reading = s.store(b"x" * 7, "2.2", "2.2.1", "A")
    clock.now += 10
    for batch in s.take_ready():
        if batch.id == reading.id:
            s.reading(batch, "read_9")
        else:
            s.store(b"r" * 5, "1.1", "1.1.2", "A")  # a new batch of 1.1 opens meanwhile
    # what kill -9 leaves behind: a half-written temporary file, an empty folder
    (s.root / receiving.id / ".x.dcm.123.tmp").write_bytes(b"partial")
    (s.root / ("0" * 32)).mkdir()
    again = Spool(s.root, 1000, 5.0, clock=clock).open()
    states = {b.id: b for b in again.batches()}
    assert states[reading.id].state == "reading" and states[reading.id].read_id == "read_9"
    assert not (s.root / receiving.id / ".x.dcm.123.tmp").exists()
    assert not (s.root / ("0" * 32)).exists()
    assert again.used == s.used
    assert {b.id for b in again.pending()} == {b.id for b in s.pending()}
    receiving_now = [b for b in again.batches() if b.state == "receiving"]
    assert len(receiving_now) == 1
    # its quiet period runs on from its newest file
    os.utime(again.files(receiving_now[0])[0], (clock.now, clock.now))
    again_clock_ready = Spool(s.root, 1000, 5.0, clock=lambda: clock.now + 6).open()
    assert [b.study_instance_uid for b in again_clock_ready.take_ready()] == ["1.1"]


def test_study_instance_limit(tmp_path):
    s = spool(tmp_path, Clock(), max_study_instances=2)
    s.store(b"1", "1.2", "1.2.1", "A")
    s.store(b"2", "1.2", "1.2.2", "A")
    with pytest.raises(SpoolFull):
        s.store(b"3", "1.2", "1.2.3", "A")
