"""Priority lanes, highest first. Aging lifts long-waiting jobs so low lanes never starve."""

from __future__ import annotations

from enum import StrEnum


class Lane(StrEnum):
    stat = "stat"
    urgent = "urgent"
    routine = "routine"
    batch = "batch"

    @property
    def rank(self) -> int:
        """0 is served first."""
        return LANE_ORDER.index(self)


LANE_ORDER: tuple[Lane, ...] = (Lane.stat, Lane.urgent, Lane.routine, Lane.batch)


def effective_rank(lane: Lane, waited_seconds: float, aging_seconds: float) -> float:
    """A job's rank after aging: every `aging_seconds` of waiting lifts it one lane.

    A batch job that waited 3 x aging_seconds competes with fresh stat jobs, and
    wins ties by being older. The Redis take script (`service.redis.scripts`)
    applies the same formula to the ranks and aging period it is given.
    """
    return lane.rank - waited_seconds / aging_seconds
