"""The DIMSE side of the node: a pynetdicom SCP answering C-ECHO and C-STORE.

What a peer meets, in order:
1. its address: refused at connect when `allowed_peer_networks` is set and the
   address is outside it (the connection is closed, no association);
2. the association: our AE title must be the called AE; the calling AE must be
   on the allow list (an empty list refuses all): else A-ASSOCIATE-RJ
   "calling AE title not recognised"; at most `max_associations` at once;
   ACSE/DIMSE/network timeouts drop silent peers; TLS when a certificate is set;
3. presentation contexts: Verification, the image storage SOP classes we decode,
   and SR / Key Object documents (stored with the study, never read);
4. each C-STORE: 0x0000 stored; 0xA700 Out of Resources when the spool has no
   room (the sender keeps the instance and retries); 0xC000 Cannot Understand
   for a dataset that does not decode or lacks its UIDs. A failure answers that
   instance only; the association and the node go on.

Statuses, never dataset contents, reach the log; pynetdicom's own logger is
held at WARNING (its INFO/DEBUG lines describe datasets).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
import ssl
from typing import Any

from pydicom import config as pydicom_config
from pydicom import uid as pydicom_uid
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service.config import DicomNodeSettings
from service.dicom_node.spool import Spool, SpoolFull
from service.metrics import ServiceMetrics

log = logging.getLogger("gmaivl.dicom_node")

# Transfer syntaxes our DICOM pipeline decodes (pydicom + the pylibjpeg plugins).
TRANSFER_SYNTAXES: list[str] = [
    pydicom_uid.ExplicitVRLittleEndian,
    pydicom_uid.ImplicitVRLittleEndian,
    pydicom_uid.DeflatedExplicitVRLittleEndian,
    pydicom_uid.ExplicitVRBigEndian,
    pydicom_uid.JPEGBaseline8Bit,
    pydicom_uid.JPEGExtended12Bit,
    pydicom_uid.JPEGLossless,
    pydicom_uid.JPEGLosslessSV1,
    pydicom_uid.JPEGLSLossless,
    pydicom_uid.JPEGLSNearLossless,
    pydicom_uid.JPEG2000Lossless,
    pydicom_uid.JPEG2000,
    pydicom_uid.RLELossless,
]
STORED = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def accepted_sop_classes() -> list[str]:
    """Image storage classes, SR documents and Key Object Selection."""
    chosen = []
    for context in StoragePresentationContexts:
        uid = UID(context.abstract_syntax)
        name = uid.name
        if "Image Storage" in name or "SR Storage" in name or "Key Object Selection" in name:
            chosen.append(str(uid))
    return chosen


def tls_context(settings: DicomNodeSettings) -> ssl.SSLContext | None:
    """DICOM TLS when a certificate is configured; peers need a certificate from
    `tls_ca_file` when one is given (mutual TLS, as the DICOM TLS profiles expect)."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_ca_file is not None:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Server(ThreadedAssociationServer):
    """pynetdicom's server, with the peer address checked before anything is read, and
    the TLS handshake bounded by the network timeout (pynetdicom's own `get_request`
    runs it in the accepting thread with no timeout: one silent peer would stop every
    other from connecting)."""

    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    on_refused: Any = None
    handshake_timeout: float = 30.0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if not self._allowed(address[0]):
            client.close()
            if self.on_refused is not None:
                self.on_refused()
            raise OSError("peer address not allowed")  # socketserver drops the request
        if self.ssl_context:
            client.settimeout(self.handshake_timeout)
            try:
                client = self.ssl_context.wrap_socket(client, server_side=True)
            except OSError:
                client.close()
                raise
            client.settimeout(None)
        return client, address

    def _allowed(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class DicomServer:
    """The SCP: call `start()` (non-blocking, its own threads) and `stop()`."""

    def __init__(self, settings: DicomNodeSettings, spool: Spool, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.server: _Server | None = None
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        # pydicom's value warnings quote the value (a patient's name, say): off.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def _ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu_bytes
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.require_called_aet = True
        # pynetdicom reads an empty list as "anyone"; ours means "no one": a random
        # title no peer is configured with stands in for the empty list.
        ae.require_calling_aet = s.allowed_calling_aets or [secrets.token_hex(8).upper()]
        ae.add_supported_context(Verification)
        for uid in accepted_sop_classes():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        return ae

    def start(self, port: int | None = None) -> None:
        s = self.settings
        handlers = [
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_ACCEPTED, self._count, ["accepted"]),
            (evt.EVT_REJECTED, self._count, ["rejected"]),
            (evt.EVT_ABORTED, self._count, ["aborted"]),
        ]
        ae = self._ae()
        address = (s.host, s.port if port is None else port)
        server = ae.make_server(
            address, evt_handlers=handlers, ssl_context=tls_context(s), server_class=_Server
        )
        assert isinstance(server, _Server)
        server.networks = [ipaddress.ip_network(n, strict=False) for n in s.allowed_peer_networks]
        server.handshake_timeout = s.acse_timeout
        server.on_refused = lambda: self.metrics.dicom_associations.labels("refused_address").inc()
        import threading

        threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True).start()
        ae._servers.append(server)
        self.server = server
        if not s.allowed_calling_aets:
            log.warning("no calling AE title is allowed: every association is refused")
        log.info("DICOM node %s listening on %s:%d", s.ae_title, s.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # handlers (pynetdicom's threads)

    def _count(self, event: Any, outcome: str) -> None:
        """Each association's outcome, with the peer's AE title and address (what a PACS
        administrator looks for; neither is patient data)."""
        self.metrics.dicom_associations.labels(outcome).inc()
        requestor = event.assoc.requestor
        level = logging.INFO if outcome == "accepted" else logging.WARNING
        log.log(level, "association %s: calling AE %r from %s", outcome,
                str(requestor.ae_title).strip(), requestor.address)  # fmt: skip

    def _echo(self, event: Any) -> int:
        return STORED

    def _store(self, event: Any) -> int:
        try:
            ds = event.dataset
            study = str(ds.StudyInstanceUID)
            sop = str(ds.SOPInstanceUID)
            if not (UID_RE.match(study) and UID_RE.match(sop)):
                raise ValueError("bad UIDs")
            for _ in ds:  # every top-level element decodes, or the instance is refused
                pass
            data = event.encoded_dataset(include_meta=True)
        except Exception:  # any undecodable dataset: this instance fails, nothing else
            self.metrics.dicom_instances.labels("malformed").inc()
            log.warning("C-STORE refused: the dataset does not decode or lacks its UIDs")
            return CANNOT_UNDERSTAND
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            self.spool.store(data, study, sop, calling)
        except SpoolFull as exc:
            self.metrics.dicom_instances.labels("out_of_resources").inc()
            log.warning("C-STORE refused with Out of Resources: %s", exc)
            return OUT_OF_RESOURCES
        except OSError as exc:
            self.metrics.dicom_instances.labels("failed").inc()
            log.error("C-STORE refused: the spool cannot write (%s)", type(exc).__name__)
            return OUT_OF_RESOURCES
        self.metrics.dicom_instances.labels("stored").inc()
        self.metrics.dicom_spool_bytes.set(self.spool.used)
        return STORED
