"""Every Redis key and channel, in one place (Lua scripts get prefixes made here).

A model's keys carry the model id as a hash tag (`{model}`, braces included), so
a Redis Cluster keeps each model's lanes, wake list, dead letters, heartbeats and
counter in one slot and can shard models across nodes.

gmaivl:q:{model}:{lane}      stream of jobs, one per lane; consumer group "workers"
gmaivl:inbox:{gateway}       stream of the events of a gateway's jobs, tagged by job id (TTL)
gmaivl:cancel:{job}          set when a job is cancelled (TTL); also published below
gmaivl:cancel                pub/sub channel: job ids cancelled
gmaivl:img:{sha256}          an image's raw RGB bytes, stored once per content (TTL)
gmaivl:tries:{job}           deliveries of a job so far (TTL)
gmaivl:wake:{model}          list pushed on submit; idle workers block on it
gmaivl:dlq:{model}           stream of jobs that failed every delivery (dead letters)
gmaivl:workers:{model}       zset worker id -> last heartbeat (unix seconds)
gmaivl:done:{model}          counter of completed jobs (drain rate for Retry-After)
gmaivl:read:{id}             a study read's record, JSON (TTL: read_ttl)
gmaivl:read:{id}:sr          its SR, DICOM Part 10 bytes (TTL: read_ttl)
gmaivl:reads:running         zset read id -> last renewal by the gateway running it
gmaivl:resp:{id}             a stored response's record, JSON (TTL: response_ttl)
gmaivl:resp:{id}:input       its input items, JSON (TTL: response_ttl)
gmaivl:resp:running          zset background response id -> last renewal by its gateway
gmaivl:models                zset model id -> last heartbeat of any worker serving it
gmaivl:parents               hash model id -> its base model (LoRA adapters; "" for a base)
"""

from __future__ import annotations

from service.core.lanes import Lane

PREFIX = "gmaivl"
GROUP = "workers"
CANCEL_CHANNEL = f"{PREFIX}:cancel"
MODELS = f"{PREFIX}:models"
PARENTS = f"{PREFIX}:parents"


def _tag(model: str) -> str:
    """The model as a Cluster hash tag; braces in an id would break the tag."""
    return "{" + model.replace("{", "(").replace("}", ")") + "}"


def lane_stream(model: str, lane: Lane) -> str:
    return f"{PREFIX}:q:{_tag(model)}:{lane.value}"


def inbox(gateway_id: str) -> str:
    return f"{PREFIX}:inbox:{gateway_id}"


def cancel_flag(job_id: str) -> str:
    return f"{PREFIX}:cancel:{job_id}"


def image(digest: str) -> str:
    return f"{PREFIX}:img:{digest}"


def tries(job_id: str) -> str:
    return f"{PREFIX}:tries:{job_id}"


def wake(model: str) -> str:
    return f"{PREFIX}:wake:{_tag(model)}"


def dead_letters(model: str) -> str:
    return f"{PREFIX}:dlq:{_tag(model)}"


def workers(model: str) -> str:
    return f"{PREFIX}:workers:{_tag(model)}"


def done_counter(model: str) -> str:
    return f"{PREFIX}:done:{_tag(model)}"


# Per-tenant limits (service.redis.tenant_limits). The tenant sits in a hash tag,
# so one tenant's keys share a Redis Cluster slot and one script can touch them all.
#
# gmaivl:tenant:{t}:req       zset lease id -> admission time (requests per minute)
# gmaivl:tenant:{t}:tok       zset "lease id:tokens" -> admission time (tokens per minute)
# gmaivl:tenant:{t}:lease     zset lease id -> expiry (concurrent requests)


def tenant_requests(tenant: str) -> str:
    return f"{PREFIX}:tenant:{{{tenant}}}:req"


def tenant_tokens(tenant: str) -> str:
    return f"{PREFIX}:tenant:{{{tenant}}}:tok"


def tenant_leases(tenant: str) -> str:
    return f"{PREFIX}:tenant:{{{tenant}}}:lease"


def read_record(read_id: str) -> str:
    return f"{PREFIX}:read:{read_id}"


def read_sr(read_id: str) -> str:
    return f"{PREFIX}:read:{read_id}:sr"


READS_RUNNING = f"{PREFIX}:reads:running"


def response_record(response_id: str) -> str:
    return f"{PREFIX}:resp:{response_id}"


def response_input(response_id: str) -> str:
    return f"{PREFIX}:resp:{response_id}:input"


RESPONSES_RUNNING = f"{PREFIX}:resp:running"
