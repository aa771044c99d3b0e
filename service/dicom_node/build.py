"""The node's parts, built from settings by the app builder (`service.gateway`),
which starts it beside the gateway's read service: `gmai-vl serve --dicom-port`
and `gmai-vl dicom-node` are that app with the node on."""

from __future__ import annotations

from collections.abc import Mapping

from service.config import Settings
from service.dicom_node.door import ReadsDoor
from service.dicom_node.node import DicomNode
from service.dicom_node.rules import RulesError, load_rules
from service.dicom_node.scp import DicomServer
from service.dicom_node.sender import ResultSender
from service.dicom_node.spool import Spool
from service.media.dicomweb_client import DicomWebClient
from service.metrics import ServiceMetrics
from service.reads.service import ReadService
from service.security.keystore import KeyStore


def result_sender(
    settings: Settings, dicomweb: Mapping[str, DicomWebClient], metrics: ServiceMetrics
) -> ResultSender:
    dicom = settings.dicom
    return ResultSender(
        dicom.ae_title,
        dicom.send_max_attempts,
        dicom.send_backoff,
        dicom.dimse_timeout,
        dicomweb,
        metrics,
    )


def build_node(
    settings: Settings,
    reads: ReadService,
    metrics: ServiceMetrics,
    keys: KeyStore | None,
    pacs_names: set[str],
) -> DicomNode:
    """Raises RulesError (every problem listed) before anything listens."""
    dicom = settings.dicom
    rules = load_rules(dicom.rules_file)
    problems = rules.problems(keys.tenant_ids() if keys is not None else None, pacs_names)
    if problems:
        raise RulesError(
            "the routing rules name what this server lacks:\n  " + "\n  ".join(problems)
        )
    spool = Spool(
        dicom.spool_dir,
        dicom.spool_max_bytes,
        dicom.study_quiet_seconds,
        dicom.spool_retention_seconds,
        dicom.max_study_instances,
    ).open()
    server = DicomServer(dicom, spool, metrics)
    door = ReadsDoor(reads, keys)
    return DicomNode(server, spool, rules, door, metrics, settings.images.max_images_per_request)
