"""The node's loop: complete studies -> rules -> study reads -> spool cleanup.

Every `POLL` seconds (an asyncio task beside the SCP's threads):
1. `spool.take_ready()`: batches whose quiet period ended or that were triggered;
   each is routed (`rules.decide` on its files' headers): a read is submitted
   (`StudyReads.submit_received`, an ordinary study read with `source: "dimse"`)
   and the batch moves to `reading` with the read's id; an ignored or unmatched
   study is `done` at once (its files go after the retention).
2. Batches in `reading`: once their read is terminal, `done`.
3. `spool.sweep()`: retention over -> deleted.

After a restart (kill -9 included) the spool says what was in flight: a batch
`ready` is routed again; a batch `reading` whose read record is gone (the
in-memory store died with the process) or still active but run by nobody is
submitted again — the read store (Redis mode) and the spool together lose no read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from service import errors
from service.dicom_node.facts import select, study_facts
from service.dicom_node.rules import (
    AeDestination,
    InstanceFacts,
    PacsDestination,
    ReadAction,
    RuleSet,
    decide,
)
from service.dicom_node.scp import DicomServer
from service.dicom_node.spool import Batch, Spool
from service.metrics import ServiceMetrics

log = logging.getLogger("gmaivl.dicom_node")

POLL = 0.25  # seconds between looks at the spool
RETRY_AFTER = 5.0  # seconds before a deferred study is submitted again


@dataclass(frozen=True)
class ReceivedStudy:
    """A complete study a rule reads: what the read lifecycle needs to run it."""

    study_instance_uid: str
    calling_ae: str
    rule: str
    action: ReadAction
    instances: list[InstanceFacts]  # the chosen instances, their files in the spool
    send_to: AeDestination | PacsDestination | None


class StudyReads(Protocol):
    """The read lifecycle as the node uses it (service.reads)."""

    async def submit_received(self, study: ReceivedStudy) -> str:
        """Creates and starts the read; returns its id."""
        ...

    async def is_over(self, read_id: str) -> bool | None:
        """True: ended; False: running; None: no such record."""
        ...

    async def resume(self, read_id: str) -> bool:
        """Runs an interrupted read again; False when its record is gone."""
        ...


@dataclass(eq=False)
class DicomNode:
    server: DicomServer
    spool: Spool
    rules: RuleSet
    reads: StudyReads
    metrics: ServiceMetrics
    max_images: int
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _retry_at: dict[str, float] = field(default_factory=dict, init=False)  # batch id -> when

    async def start(self, port: int | None = None) -> None:
        for batch in self.spool.pending():  # what a previous run left in flight
            if batch.state == "reading" and batch.read_id is not None:
                if not await self.reads.resume(batch.read_id):
                    log.info("a read lost with a restart is submitted again")
                    await self._route(batch)
                else:
                    log.info("a read interrupted by a restart runs again: %s", batch.read_id)
        self.server.start(port)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self.server.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the spool or the store away: next round
                log.error("DICOM node round failed (%s)", type(exc).__name__)
            await asyncio.sleep(POLL)

    async def tick(self) -> None:
        await asyncio.to_thread(self.spool.take_ready)
        now = time.monotonic()
        for batch in self.spool.batches():
            if batch.state == "ready" and self._retry_at.get(batch.id, 0.0) <= now:
                await self._route(batch)
            elif batch.state == "reading" and batch.read_id is not None:
                over = await self.reads.is_over(batch.read_id)
                if over:
                    await asyncio.to_thread(self.spool.done, batch)
                elif over is None:  # its record is gone (Redis lost it): read it again
                    await self._route(batch)
        await asyncio.to_thread(self.spool.sweep)
        self.metrics.dicom_spool_bytes.set(self.spool.used)

    async def _route(self, batch: Batch) -> None:
        files = self.spool.files(batch)
        facts = await asyncio.to_thread(
            study_facts, batch.study_instance_uid, batch.calling_aes, files
        )
        decision = decide(self.rules, facts)
        if not decision.reads:
            self.metrics.dicom_studies.labels(decision.outcome).inc()
            log.info("study of %d instances: %s", len(files), decision.describe())
            await asyncio.to_thread(self.spool.done, batch)
            return
        rule = decision.rule
        assert rule is not None and rule.read is not None
        # the rule's count within the server's per-request image limit
        limit = min(rule.read.max_images or self.max_images, self.max_images)
        study = ReceivedStudy(
            study_instance_uid=batch.study_instance_uid,
            calling_ae=batch.calling_aes[0] if batch.calling_aes else "",
            rule=rule.name,
            action=rule.read,
            instances=select(decision.instances, limit),
            send_to=rule.send_to,
        )
        try:
            read_id = await self.reads.submit_received(study)
        except errors.ServiceError as exc:
            if exc.status_code in (429, 503):  # no worker yet, lane full: try again soon
                self._retry_at[batch.id] = time.monotonic() + RETRY_AFTER
                log.warning("read of a received study deferred (%s)", exc.code)
                return
            self.metrics.dicom_studies.labels("refused").inc()
            log.error("read of a received study refused: %s (%s)", exc.code, rule.name)
            await asyncio.to_thread(self.spool.done, batch)
            return
        self._retry_at.pop(batch.id, None)
        self.metrics.dicom_studies.labels("read").inc()
        log.info("study of %d instances: %s -> %s", len(files), decision.describe(), read_id)
        await asyncio.to_thread(self.spool.reading, batch, read_id)
