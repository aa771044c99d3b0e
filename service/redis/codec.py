"""Jobs and events to and from JSON, for queues that cross process boundaries.

Images are not in the job document: `encode_job` returns them separately so the
Redis queue can store each once under its content hash.

The wire format is JSON, written and read with msgspec (the same documents the
standard `json` module wrote, at a fraction of the CPU per event: the codec
runs once per token on each side).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgspec

from service.core.generation import (
    Delta,
    Finish,
    GenerationRequest,
    ImageInput,
    Logprob,
    SamplingParams,
    TokenLogprobs,
    Usage,
)
from service.core.jobs import Job, JobEvent, JobFailed, Restarted
from service.core.lanes import Lane

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def encode_job(job: Job, image_refs: list[str]) -> str:
    request = job.request
    return _encode(
        {
            "id": job.id,
            "model": job.model,
            "lane": job.lane.value,
            "deadline": job.deadline,
            "enqueued_at": job.enqueued_at,
            "tenant": job.tenant,
            "trace": job.trace,
            "sampling": request.sampling,  # a dataclass: its fields, `stop` as a list
            "messages": request.messages,
            "images": [
                {"ref": ref, "width": image.width, "height": image.height}
                for ref, image in zip(image_refs, request.images, strict=True)
            ],
        }
    ).decode()


def parse_job(document: str | bytes) -> dict[str, Any]:
    """The job document as a dict (what `job_from` builds the job from)."""
    return _decode(document)


def decode_job(document: str | bytes, image_bytes: list[bytes]) -> Job:
    return job_from(parse_job(document), image_bytes)


def job_from(raw: dict[str, Any], image_bytes: list[bytes]) -> Job:
    sampling = raw["sampling"]
    images = [
        ImageInput(spec["width"], spec["height"], data)
        for spec, data in zip(raw["images"], image_bytes, strict=True)
    ]
    request = GenerationRequest(
        raw["id"],
        raw["messages"],
        SamplingParams(
            sampling["max_tokens"],
            sampling["temperature"],
            sampling["top_p"],
            sampling["seed"],
            tuple(sampling["stop"]),
            sampling["response_format"],
            sampling.get("logprobs"),  # absent in jobs of an older gateway
        ),
        images,
        model=raw["model"],
    )
    return Job(
        raw["id"],
        raw["model"],
        Lane(raw["lane"]),
        request,
        raw["deadline"],
        raw["enqueued_at"],
        raw["tenant"],
        raw.get("trace"),
    )


def encode_events(events: list[tuple[str, JobEvent]]) -> bytes:
    """(job id, event) pairs as one JSON document (UTF-8): a worker's whole flush for
    one gateway travels as a single stream entry."""
    return _encode([[job_id, _event_body(event)] for job_id, event in events])


def decode_events(text: str | bytes) -> list[tuple[str, JobEvent]]:
    return [(job_id, _event_from_body(body)) for job_id, body in _decode(text)]


def _event_body(event: JobEvent) -> dict[str, Any]:
    if isinstance(event, Delta):
        if event.logprobs:
            return {"t": "d", "text": event.text, "lp": [_token_body(t) for t in event.logprobs]}
        return {"t": "d", "text": event.text}
    if isinstance(event, Finish):
        return {
            "t": "f",
            "reason": event.finish_reason,
            "prompt": event.usage.prompt_tokens,
            "completion": event.usage.completion_tokens,
        }
    if isinstance(event, JobFailed):
        return {"t": "x", **asdict(event)}
    return {"t": "r", "attempt": event.attempt}


def _event_from_body(raw: dict[str, Any]) -> JobEvent:
    kind = raw["t"]
    if kind == "d":  # most events: no generator, no copy
        lp = raw.get("lp")
        return Delta(raw["text"], tuple(map(_token_from_body, lp)) if lp else ())
    if kind == "f":
        return Finish(raw["reason"], Usage(raw["prompt"], raw["completion"]))
    if kind == "x":
        del raw["t"]
        return JobFailed(**raw)
    return Restarted(raw["attempt"])


def _token_body(token: TokenLogprobs) -> list[Any]:
    """[token, logprob, bytes, [[token, logprob, bytes], ...]]."""
    return [*_logprob_body(token.chosen), [_logprob_body(t) for t in token.top]]


def _logprob_body(logprob: Logprob) -> list[Any]:
    return [logprob.token, logprob.logprob, list(logprob.bytes)]


def _token_from_body(raw: list[Any]) -> TokenLogprobs:
    token, logprob, data, top = raw
    return TokenLogprobs(
        Logprob.of(token, logprob, bytes(data)),
        tuple(Logprob.of(t, lp, bytes(b)) for t, lp, b in top),
    )
