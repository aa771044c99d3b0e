"""The request queue: one interface (`base.JobQueue`), an in-process implementation."""

from service.queue.base import Job, JobEvent, JobFailed, JobQueue
from service.queue.lanes import LANE_ORDER, Lane
from service.queue.memory import InProcessJobQueue

__all__ = ["LANE_ORDER", "InProcessJobQueue", "Job", "JobEvent", "JobFailed", "JobQueue", "Lane"]
