"""One study read, start to end: pick the instances (QIDO-RS), fetch them (WADO-RS)
and render them with the DICOM pipeline, generate the answer through the queue
(a Job like any chat request: a lost worker's job is retried by the queue), then
build the SR and store it (STOW-RS). Each step is written to the read's record,
so a poll shows `running` and the instances used; errors are raised as
`service.errors` and turned into the record's `error` by the caller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from service import errors
from service.config import Settings
from service.core.generation import Delta, GenerationRequest, ImageInput, SamplingParams
from service.core.jobs import Job, JobFailed, Restarted
from service.core.lanes import Lane
from service.media.dicom import DicomOptions
from service.media.images import DICOM_TYPE
from service.media.resolve import decode_payload
from service.media.windowing import Window
from service.pacs.client import PacsClient
from service.pacs.selection import select_instances
from service.pacs.sr import build_sr, source_header
from service.queue.protocols import GatewayQueue
from service.reads.store import Read, ReadStore

DEFAULT_PROMPT = (
    "Write a short findings report for these images of one imaging study: "
    "the findings, then a one-line impression."
)


WATCH_INTERVAL = 0.5  # seconds between checks of a generating read's record


class ReadAbandoned(Exception):
    """The read was cancelled or removed while it ran: stop without an outcome."""


class ReadRunner:
    def __init__(
        self,
        settings: Settings,
        queue: GatewayQueue,
        store: ReadStore,
        pacs: dict[str, PacsClient],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.pacs = pacs

    async def run(self, read: Read) -> None:
        """Runs `read` to `completed` (in place and in the store), or raises."""
        spec = read.spec
        deadline = time.time() + spec.timeout
        client = self.pacs.get(spec.pacs)
        if client is None:
            raise errors.PacsError("The read's PACS is no longer configured.", code="unknown_pacs")
        read.status = "running"
        await self._save(read)
        per_instance = len(spec.frames or [None])
        limit = max(spec.max_images // per_instance, 1)
        chosen = await select_instances(
            client,
            read.study_instance_uid,
            spec.series_instance_uid,
            spec.sop_instance_uids,
            limit,
        )
        files = await asyncio.gather(
            *(
                client.retrieve(read.study_instance_uid, c.series_instance_uid, c.sop_instance_uid)
                for c in chosen
            )
        )
        images, headers = await self._render(files, spec.window, spec.frames)
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
        if spec.store:
            await client.store(built.data)
        await self.store.put_sr(read.id, built.data)
        read.sr = {
            "study_instance_uid": built.study_instance_uid,
            "series_instance_uid": built.series_instance_uid,
            "sop_instance_uid": built.sop_instance_uid,
            "stored": spec.store,
        }
        read.status = "completed"

    async def _save(self, read: Read) -> None:
        if not await self.store.update(read):
            raise ReadAbandoned

    async def _render(
        self, files: list[bytes], window: Any, frames: list[int] | None
    ) -> tuple[list[ImageInput], list[Any]]:
        """Every instance through the gateway's DICOM pipeline (threads), and its header."""
        if isinstance(window, dict):
            window = Window(window["center"], window["width"], window.get("function", "LINEAR"))
        options = DicomOptions(window=window, frames=tuple(frames or ()))
        limits = self.settings.images

        def render(index: int, data: bytes) -> tuple[list[ImageInput], Any]:
            param = f"instances[{index}]"
            resolved = decode_payload(DICOM_TYPE, data, options, limits, param)
            return resolved.images, source_header(data)

        done = await asyncio.gather(
            *(asyncio.to_thread(render, i, data) for i, data in enumerate(files))
        )
        return [image for images, _ in done for image in images], [h for _, h in done]

    async def _generate(
        self, read: Read, question: str, images: list[ImageInput], deadline: float
    ) -> tuple[str, dict[str, int]]:
        spec = read.spec
        job_id = uuid.uuid4().hex
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": question})
        messages = [{"role": "user", "content": content}]
        sampling = SamplingParams(max_tokens=spec.max_tokens, temperature=0.0)
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
        await self.queue.submit(job)
        read.job_id = job_id
        collect = asyncio.create_task(self._collect(job_id))
        watch = asyncio.create_task(self._watch(read.id))
        try:
            await self._save(read)
            await asyncio.wait({collect, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()  # raises ReadAbandoned
            return collect.result()
        except BaseException:
            await self.queue.cancel(job_id)
            raise
        finally:
            for task in (collect, watch):
                task.cancel()
            await asyncio.gather(collect, watch, return_exceptions=True)

    async def _collect(self, job_id: str) -> tuple[str, dict[str, int]]:
        pieces: list[str] = []
        batches = self.queue.events(job_id)
        try:
            async for batch in batches:
                for event in batch:
                    if isinstance(event, Delta):
                        pieces.append(event.text)
                    elif isinstance(event, Restarted):
                        pieces.clear()  # another worker starts over
                    elif isinstance(event, JobFailed):
                        raise event.to_exception()
                    else:
                        return "".join(pieces), event.usage.as_openai()
        finally:
            await batches.aclose()
        raise errors.EngineError("The generation ended without finishing.")

    async def _watch(self, read_id: str) -> None:
        """Raises ReadAbandoned once the record is terminal: a cancel on another gateway
        (Redis mode) reaches the gateway running the read within WATCH_INTERVAL."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            current = await self.store.get(read_id)
            if current is None or current.terminal:
                raise ReadAbandoned
