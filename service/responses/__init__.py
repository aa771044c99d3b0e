"""Stored responses of `/v1/responses`, independent of HTTP and Redis (docs/api.md)."""
