"""The lease side of a store that lives in one process (the in-memory read and
response stores): nothing to renew, no orphan to take over (its work ends with the
process), nothing to close. The Redis stores answer these for real; the sweep that
calls them is `service.serving.leases`."""

from __future__ import annotations


class OneProcessLeases:
    async def renew(self, work_id: str, owner: str) -> None:
        return None

    async def claim_orphan(self, owner: str, stale_after: float) -> None:
        return None

    async def close(self) -> None:
        return None
