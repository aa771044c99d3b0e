"""The node's door into the read lifecycle (`service.reads`): a complete, routed
study becomes a `ReadOrder` with `source: "dimse"`, submitted exactly as the HTTP
API submits one (same admission, tenant policy and limits, queue lane, audit,
metrics). The rule's tenant acts through `KeyStore.acting_for`; its key id is
`dicom-node`."""

from __future__ import annotations

import time
import uuid

from service.dicom_node.node import ReceivedStudy
from service.dicom_node.rules import AeDestination, PacsDestination, WindowSpec
from service.reads.service import ReadOrder, ReadService
from service.security.keystore import KeyStore
from service.serving.context import RequestContext

KEY_ID = "dicom-node"


class ReadsDoor:
    def __init__(self, reads: ReadService, keys: KeyStore | None) -> None:
        self.reads = reads
        self.keys = keys

    async def submit_received(self, study: ReceivedStudy) -> str:
        action = study.action
        window = action.window
        order = ReadOrder(
            model=action.model,
            study_instance_uid=study.study_instance_uid,
            prompt=action.prompt,
            window=window.model_dump() if isinstance(window, WindowSpec) else window,
            frames=action.frames,
            max_tokens=action.max_tokens,
            priority=action.priority,
            store=False,
            pacs=study.send_to.pacs if isinstance(study.send_to, PacsDestination) else None,
            source="dimse",
            calling_ae=study.calling_ae,
            files=[str(i.path) for i in study.instances],
            send_to=(
                study.send_to.model_dump()
                if isinstance(study.send_to, AeDestination | PacsDestination)
                else None
            ),
            response_format=action.response_format(),
        )
        principal = (
            self.keys.acting_for(action.tenant, KEY_ID)
            if self.keys is not None and action.tenant is not None
            else None
        )
        ctx = RequestContext(
            request_id="dimse-" + uuid.uuid4().hex,
            priority=None,
            timeout=f"{action.timeout:g}" if action.timeout is not None else None,
            started=time.perf_counter(),
            principal=principal,
        )
        read = await self.reads.submit(order, ctx)
        return read.id

    async def is_over(self, read_id: str) -> bool | None:
        return await self.reads.is_over(read_id)

    async def resume(self, read_id: str) -> bool:
        return await self.reads.resume(read_id)
