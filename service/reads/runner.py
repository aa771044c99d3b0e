"""One study read, start to end: pick the instances (QIDO-RS), fetch them (WADO-RS)
and render them with the gateway's `MediaResolver` (the chat path's spans and
metrics), generate the answer through the queue (`serving.jobs`, the chat path:
trace context, rejection counts; a lost worker's job is retried by the queue), then
build the SR and store it (STOW-RS). A study the DICOM node received (`source:
"dimse"`) takes its images from the node's spool files instead, and its SR goes to
the rule's destination through the node's `ResultSink` (C-STORE or STOW-RS, retried),
after it is kept for download. Each step is written to the read's record,
so a poll shows `running` and the instances used; errors are raised as
`service.errors` and turned into the record's `error` by the caller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service import errors, tracing
from service.config import Settings
from service.core.generation import GenerationRequest, ImageInput, SamplingParams
from service.core.jobs import Job
from service.core.lanes import Lane
from service.media.dicom import DicomOptions
from service.media.dicomweb_client import DicomWebClient
from service.media.images import DICOM_TYPE
from service.media.resolve import MediaResolver
from service.media.windowing import Window
from service.metrics import ServiceMetrics
from service.reads.model import Read, ReadStatus
from service.reads.selection import Selected, select_instances
from service.reads.sr import build_sr, source_header
from service.reads.store import ReadStore
from service.serving.images import resolve_images
from service.serving.jobs import JobPath, collect

DEFAULT_PROMPT = (
    "Write a short findings report for these images of one imaging study: "
    "the findings, then a one-line impression."
)


WATCH_INTERVAL = 0.5  # seconds between checks of a generating read's record


class ReadAbandoned(Exception):
    """The read was cancelled or removed while it ran: stop without an outcome."""


class ResultSink(Protocol):
    """Where a received study's SR goes (the DICOM node's sender): raises
    `errors.PacsError` with code `sr_store_failed` once its retries are spent."""

    async def deliver(self, data: bytes, send_to: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class InstanceSource:
    kind: str  # the image span's source attribute
    load: Callable[[], Awaitable[bytes]]


def _wado(client: DicomWebClient, read: Read, item: Selected) -> InstanceSource:
    async def load() -> bytes:
        return await client.retrieve(
            read.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
        )

    return InstanceSource("dicomweb_instance", load)


def _file(path: str) -> InstanceSource:
    async def load() -> bytes:
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        except OSError as exc:
            raise errors.InvalidRequest(
                "A received instance is no longer in the spool.", code="instance_not_found"
            ) from exc

    return InstanceSource("dimse_spool", load)


@dataclass(eq=False)
class ReadRunner:
    settings: Settings
    jobs: JobPath
    store: ReadStore
    pacs: Mapping[str, DicomWebClient]  # with READ failures
    media: MediaResolver
    metrics: ServiceMetrics
    results: ResultSink | None = None  # the DICOM node's SR sender (dimse reads)

    async def run(self, read: Read) -> None:
        """Runs `read` to `completed` (in place and in the store), or raises."""
        spec = read.spec
        deadline = time.time() + spec.timeout
        received = spec.source == "dimse"  # images from the DICOM node's spool
        client = self.pacs.get(spec.pacs) if spec.pacs is not None else None
        if client is None and not received:
            raise errors.PacsError("The read's PACS is no longer configured.", code="unknown_pacs")
        read.status = ReadStatus.RUNNING
        await self._save(read)
        if received:
            images, headers = await self._images(read, [_file(p) for p in spec.files or []])
        else:
            assert client is not None
            per_instance = len(spec.frames or [None])
            limit = max(spec.max_images // per_instance, 1)
            chosen = await select_instances(
                client,
                read.study_instance_uid,
                spec.series_instance_uid,
                spec.sop_instance_uids,
                limit,
            )
            images, headers = await self._images(read, [_wado(client, read, c) for c in chosen])
        read.instances = [str(h.SOPInstanceUID) for h in headers]
        await self._save(read)
        question = spec.prompt or DEFAULT_PROMPT
        answer, usage = await self._generate(read, question, images, deadline)
        read.answer, read.usage = answer, usage
        built = await asyncio.to_thread(
            build_sr, headers, question, answer, read.model, self.settings.model_version
        )
        current = await self.store.get(read.id)
        if current is None or current.terminal:
            raise ReadAbandoned  # cancelled while generating: nothing goes to the PACS
        read.sr = {
            "study_instance_uid": built.study_instance_uid,
            "series_instance_uid": built.series_instance_uid,
            "sop_instance_uid": built.sop_instance_uid,
            "stored": False,
        }
        if received:
            # Downloadable whatever the destination answers; a failed send fails the read.
            await self.store.put_sr(read.id, built.data)
            if spec.send_to is not None:
                if self.results is None:
                    raise errors.PacsError("No SR sender is configured.", code="sr_store_failed")
                await self.results.deliver(built.data, spec.send_to)
                read.sr["stored"] = True
        else:
            assert client is not None
            if spec.store:
                await client.store(built.data)
            await self.store.put_sr(read.id, built.data)
            read.sr["stored"] = spec.store
        read.status = ReadStatus.COMPLETED

    async def _save(self, read: Read) -> None:
        if not await self.store.update(read):
            raise ReadAbandoned

    async def _images(
        self, read: Read, sources: list[InstanceSource]
    ) -> tuple[list[ImageInput], list[Any]]:
        """Every instance fetched (WADO-RS, or read from the node's spool) and through
        the gateway's DICOM pipeline, and its header; spans and metrics as for a chat
        request's images."""
        window = read.spec.window
        if isinstance(window, dict):
            window = Window(window["center"], window["width"], window.get("function", "LINEAR"))
        options = DicomOptions(window=window, frames=tuple(read.spec.frames or ()))

        async def one(index: int, source: InstanceSource) -> tuple[list[ImageInput], Any]:
            with tracing.span("image.resolve") as span:
                if span is not None:
                    span.set_attribute("gmaivl.image.source", source.kind)
                with tracing.span("image.fetch"):
                    data = await source.load()
                resolved = await self.media.decode(DICOM_TYPE, data, options, f"instances[{index}]")
                return resolved.images, await asyncio.to_thread(source_header, data)

        done = await resolve_images(self.metrics, [one(i, s) for i, s in enumerate(sources)])
        return [image for images, _ in done for image in images], [h for _, h in done]

    async def _generate(
        self, read: Read, question: str, images: list[ImageInput], deadline: float
    ) -> tuple[str, dict[str, int]]:
        spec = read.spec
        job_id = uuid.uuid4().hex
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": question})
        messages = [{"role": "user", "content": content}]
        sampling = SamplingParams(
            max_tokens=spec.max_tokens, temperature=0.0, response_format=spec.response_format
        )
        job = Job(
            id=job_id,
            model=read.model,
            lane=Lane(spec.lane),
            request=GenerationRequest(job_id, messages, sampling, images, model=read.model),
            deadline=deadline,
            tenant=read.tenant,
        )
        if job.remaining(time.time()) <= 0:
            raise errors.DeadlineExceeded("The read timed out before its generation started.")
        events = await self.jobs.submit(job)
        read.job_id = job_id
        collecting = asyncio.create_task(collect(events))
        watch = asyncio.create_task(self._watch(read.id))
        try:
            await self._save(read)
            await asyncio.wait({collecting, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()  # raises ReadAbandoned
            done = collecting.result()
            return done.text, done.finish.usage.as_openai()
        except BaseException:
            await self.jobs.cancel(job_id)
            raise
        finally:
            for task in (collecting, watch):
                task.cancel()
            await asyncio.gather(collecting, watch, return_exceptions=True)
            await events.aclose()

    async def _watch(self, read_id: str) -> None:
        """Raises ReadAbandoned once the record is terminal: a cancel on another gateway
        (Redis mode) reaches the gateway running the read within WATCH_INTERVAL."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            current = await self.store.get(read_id)
            if current is None or current.terminal:
                raise ReadAbandoned
