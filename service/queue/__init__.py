"""The request queue: a protocol per side (`protocols`), the in-process implementation
(`memory`). The Redis implementation is the `service.redis` package."""
