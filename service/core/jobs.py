"""A job (one generation request in a lane, with a deadline) and the events a
job's reader sees: the engine's `Delta`s and `Finish`, or `JobFailed`, with
`Restarted` when another worker started the job over."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from service import errors
from service.core.generation import Delta, Finish, GenerationRequest
from service.core.lanes import Lane


@dataclass(frozen=True)
class JobFailed:
    """Terminal event for a job that produced no `Finish`, keyed by the error's code
    (`errors.error_for_code` turns it back into the exception). The message is safe
    to show the client (no request content)."""

    code: str
    message: str
    param: str | None = None
    retry_after: int | None = None  # for a 429 from the engine (e.g. an upstream server)

    @classmethod
    def from_exception(cls, exc: errors.ServiceError) -> JobFailed:
        retry_after = (
            exc.retry_after if isinstance(exc, errors.Overloaded | errors.NotReady) else None
        )
        return cls(errors.code_of(exc), exc.message, exc.param, retry_after)

    def to_exception(self) -> errors.ServiceError:
        return errors.error_for_code(self.code, self.message, self.param, self.retry_after)


@dataclass(frozen=True)
class Restarted:
    """The job's worker died and another one started it again from the beginning
    (Redis mode). Text published before this marker is void: a collecting reader
    starts over; a reader that already forwarded text must end with a retriable
    error, never splice two attempts."""

    attempt: int


JobEvent = Delta | Finish | JobFailed | Restarted
DEADLINE_PASSED = JobFailed(
    "deadline_exceeded", "The request did not complete before its deadline."
)


def is_terminal(event: JobEvent) -> bool:
    return isinstance(event, Finish | JobFailed)


@dataclass
class Job:
    id: str
    model: str
    lane: Lane
    request: GenerationRequest
    deadline: float  # wall-clock epoch seconds: the same in every process
    enqueued_at: float = field(default_factory=time.time)
    tenant: str | None = None  # the caller's tenant (auth on), for workers' logs and audit
    trace: dict[str, str] | None = None  # W3C trace carrier (service.tracing); None: not traced

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)
