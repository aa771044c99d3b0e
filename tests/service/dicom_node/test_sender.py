"""SR sends by C-STORE against a real pynetdicom SCP that fails on purpose."""

from __future__ import annotations

import io

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from service import errors
from service.config import PacsEntry, Settings
from service.dicom_node.sender import ResultSender, SendFailed, StoreTarget, send_with_retry
from service.media.dicomweb import Pacs
from service.media.dicomweb_client import DicomWebClient
from service.media.resolve import gateway_fetcher
from service.metrics import ServiceMetrics
from service.processes import free_port
from tests.dicom_study import make_study


class FlakyPacs:
    def __init__(self, failures: int, status: int = 0xA700) -> None:
        self.failures, self.status, self.received = failures, status, []
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.store)]
        )

    def store(self, event):
        if self.failures > 0:
            self.failures -= 1
            return self.status
        self.received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def target(self):
        return StoreTarget("PACS", "127.0.0.1", self.port)


@pytest.fixture
def instance() -> bytes:
    return make_study([("CT", 1)]).files[0]


async def test_failure_statuses_are_retried_then_stored(instance):
    pacs = FlakyPacs(failures=2)
    try:
        tries = await send_with_retry(instance, pacs.target(), "GMAIVL", attempts=4, backoff=0.01)
        assert tries == 3
        assert pacs.received == [str(dcmread(io.BytesIO(instance)).SOPInstanceUID)]
    finally:
        pacs.server.shutdown()


async def test_every_try_failing_raises_with_the_last_status(instance):
    pacs = FlakyPacs(failures=10, status=0xC001)
    try:
        with pytest.raises(SendFailed, match="0xC001"):
            await send_with_retry(instance, pacs.target(), "GMAIVL", attempts=3, backoff=0.01)
        assert pacs.failures == 7
    finally:
        pacs.server.shutdown()


async def test_nobody_listening_is_a_failed_send(instance):
    target = StoreTarget("PACS", "127.0.0.1", free_port())
    with pytest.raises(SendFailed):
        await send_with_retry(instance, target, "GMAIVL", attempts=2, backoff=0.01, timeout=2)


def stow_sender(orthanc, password: str | None = None) -> ResultSender:
    entry = orthanc.pacs_entry("main") | ({"password": password} if password else {})
    settings = Settings()
    fetcher = gateway_fetcher(settings.images, settings.fetch)
    client = DicomWebClient(Pacs.from_entry(PacsEntry.model_validate(entry)), fetcher)
    return ResultSender("GMAIVL", 2, 0.01, 5, {"main": client}, ServiceMetrics())


async def test_stow_rs_destination(orthanc, instance):
    """{pacs: NAME}: the SR (here any instance) goes by STOW-RS, retried, then fails
    with sr_store_failed."""
    uid = str(dcmread(io.BytesIO(instance)).SOPInstanceUID)
    await stow_sender(orthanc).deliver(instance, {"pacs": "main"})
    found = httpx.get(f"{orthanc.dicomweb}/instances", params={"SOPInstanceUID": uid},
                      auth=orthanc.auth).json()  # fmt: skip
    assert len(found) == 1
    sender = stow_sender(orthanc, password="wrong")
    with pytest.raises(errors.PacsError) as failed:
        await sender.deliver(instance, {"pacs": "main"})
    assert failed.value.code == "sr_store_failed"
    assert sender.metrics.dicom_sr_sends.labels("retried")._value.get() == 1
