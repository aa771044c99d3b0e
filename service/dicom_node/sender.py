"""Results out: the SR sent by C-STORE to a DICOM node (the PACS's AE), or by
STOW-RS to a configured DICOMweb PACS, retried (`ResultSender`, the reads'
`ResultSink`).

A send is one association with one presentation context (the SR's SOP class in
Explicit VR Little Endian, then Implicit). Success is status 0x0000 or a warning
(0xB000-0xBFFF: the PACS stored it with a coercion); any other status, a
rejected or aborted association, or a network error is a failed try. Tries are
spaced by `backoff`, doubling; after the last the caller gets `SendFailed` (the
read ends `failed` with `sr_store_failed`, the SR stays downloadable).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from service import errors
from service.media.dicomweb_client import READ, DicomWebClient
from service.metrics import ServiceMetrics

log = logging.getLogger("gmaivl.dicom_node")


class SendFailed(Exception):
    """Every try failed; `reason` is a status or a short phrase (no dataset content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoreTarget:
    ae_title: str
    host: str
    port: int


def c_store_once(data: bytes, target: StoreTarget, calling_ae: str, timeout: float) -> None:
    """One association, one C-STORE (blocking: call it in a thread); raises SendFailed."""
    ds = dcmread(io.BytesIO(data))
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    if not assoc.is_established:
        raise SendFailed("association rejected" if assoc.is_rejected else "no association")
    try:
        status = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise SendFailed("association lost")
    if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
        raise SendFailed(f"status 0x{code:04X}")


async def retrying(
    once: Callable[[], Awaitable[None]],
    what: str,
    attempts: int,
    backoff: float,
    on_retry: Callable[[], None] | None = None,
) -> int:
    """Awaits `once()` until it succeeds, at most `attempts` times, `backoff` seconds
    apart, doubling; returns the tries used, or raises SendFailed with the last reason.
    A try fails with SendFailed, an OS error, or one of ours (STOW-RS: its code)."""
    delay = backoff
    last = "no try"
    for attempt in range(1, attempts + 1):
        try:
            await once()
            return attempt
        except SendFailed as exc:
            last = exc.reason
        except errors.ServiceError as exc:
            last = exc.code or type(exc).__name__
        except (OSError, RuntimeError) as exc:
            last = type(exc).__name__
        log.warning("SR %s: try %d of %d failed (%s)", what, attempt, attempts, last)
        if attempt < attempts:
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
            delay *= 2
    raise SendFailed(last)


async def send_with_retry(
    data: bytes,
    target: StoreTarget,
    calling_ae: str,
    attempts: int,
    backoff: float,
    timeout: float = 30.0,
    on_retry: Callable[[], None] | None = None,
) -> int:
    """C-STOREs `data` to `target`, tried `attempts` times; returns the tries used."""

    async def once() -> None:
        await asyncio.to_thread(c_store_once, data, target, calling_ae, timeout)

    return await retrying(once, f"C-STORE to {target.ae_title}", attempts, backoff, on_retry)


@dataclass(eq=False)
class ResultSender:
    """`deliver(data, send_to)`: `{ae_title, host, port}` by C-STORE, `{pacs: NAME}` by
    STOW-RS; both tried `attempts` times with doubling backoff. When every try failed:
    `errors.PacsError` with code `sr_store_failed` (the read fails, its SR stays)."""

    calling_ae: str
    attempts: int
    backoff: float
    timeout: float
    dicomweb: Mapping[str, DicomWebClient]
    metrics: ServiceMetrics

    def __post_init__(self) -> None:
        self.dicomweb = {name: c.with_failures(READ) for name, c in self.dicomweb.items()}

    async def deliver(self, data: bytes, send_to: dict[str, Any]) -> None:
        retried = self.metrics.dicom_sr_sends.labels("retried").inc
        try:
            if "pacs" in send_to:
                await self._stow(data, str(send_to["pacs"]), retried)
            else:
                target = StoreTarget(send_to["ae_title"], send_to["host"], int(send_to["port"]))
                await send_with_retry(data, target, self.calling_ae, self.attempts, self.backoff,
                                      self.timeout, retried)  # fmt: skip
        except SendFailed as exc:
            self.metrics.dicom_sr_sends.labels("failed").inc()
            raise errors.PacsError(
                f"The SR could not be stored ({exc.reason}) after {self.attempts} tries.",
                code="sr_store_failed",
            ) from None
        self.metrics.dicom_sr_sends.labels("stored").inc()

    async def _stow(self, data: bytes, pacs: str, retried: Callable[[], None]) -> None:
        client = self.dicomweb.get(pacs)
        if client is None:
            raise SendFailed("no such PACS")

        async def once() -> None:
            await client.store(data)

        await retrying(once, "STOW-RS", self.attempts, self.backoff, retried)
