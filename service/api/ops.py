"""`GET /v1/ops/stats`: what the console's operations panel shows, read from the
gateway itself (no Prometheus needed): queue depth and oldest age per lane, live
workers, and recent percentiles of chat latency and time to first token.

It reads the queue (the same calls `/metrics` makes) and the gateway's own
histograms (`recent_latency`); nothing is added to the chat path.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from service.api.protocol import ErrorBody
from service.api.recent_latency import RecentStats, RecentWindow, bucket_counts
from service.api.state import AppState
from service.core.lanes import Lane

router = APIRouter()

CHAT_ROUTE = "/v1/chat/completions"


class LaneStats(BaseModel):
    lane: Lane
    depth: int
    oldest_age_seconds: float


class Percentiles(BaseModel):
    window_seconds: float = Field(description="The span the figures cover (up to 5 minutes).")
    count: int = Field(description="Observations in that span.")
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class OpsStats(BaseModel):
    object: str = "ops.stats"
    model: str
    time: int
    lanes: list[LaneStats] = Field(description="Highest lane first.")
    live_workers: int
    latency_seconds: Percentiles = Field(description="Chat requests, arrival to last byte.")
    time_to_first_token_seconds: Percentiles


class OpsWindows:
    """The recent windows of one app (created on first use, kept on the app state)."""

    def __init__(self, state: AppState) -> None:
        metrics = state.metrics
        model = state.model_id
        self.latency = RecentWindow(
            lambda: bucket_counts(
                metrics.request_duration.metric, {"route": CHAT_ROUTE, "model": model}
            )
        )
        self.ttft = RecentWindow(
            lambda: bucket_counts(metrics.time_to_first_token.metric, {"model": model})
        )


def _percentiles(stats: RecentStats) -> Percentiles:
    return Percentiles(
        window_seconds=stats.window_seconds, count=stats.count, **(stats.quantiles or {})
    )


@router.get(
    "/v1/ops/stats",
    response_model=OpsStats,
    responses={status: {"model": ErrorBody} for status in (401,)},
)
async def ops_stats(request: Request) -> OpsStats:
    state: AppState = request.app.state.gmaivl
    windows: OpsWindows = request.app.state.ops_windows
    depths = await state.queue.depths()
    ages = await state.queue.oldest_ages()
    return OpsStats(
        model=state.model_id,
        time=int(time.time()),
        lanes=[
            LaneStats(
                lane=lane,
                depth=depths.get(lane, 0),
                oldest_age_seconds=round(ages.get(lane, 0.0), 3),
            )
            for lane in Lane
        ],
        live_workers=await state.queue.live_workers(),
        latency_seconds=_percentiles(windows.latency.stats()),
        time_to_first_token_seconds=_percentiles(windows.ttft.stats()),
    )
