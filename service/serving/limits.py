"""The server's and a tenant's limits on one request's size, checked by one function
each wherever a request is admitted (chat, render, study reads, the tenant gate): the
same code, param and wording whichever route refuses."""

from __future__ import annotations

from service import errors


def check_image_count(count: int, limit: int | None, *, param: str, tenant: bool = False) -> None:
    """`count` images (a DICOM part makes one per frame) against `limit`, the server's
    or (`tenant`) the caller's tenant's; None is no limit. 400 too_many_images."""
    if limit is not None and count > limit:
        whose = "your tenant's limit" if tenant else "the limit"
        raise errors.InvalidRequest(
            f"The request has {count} images (DICOM frames count one each); {whose} is {limit}.",
            param=param,
            code="too_many_images",
        )


def check_max_tokens(max_tokens: int, limit: int | None, *, tenant: bool = False) -> None:
    """`max_tokens` against the server's limit or (`tenant`) the tenant's tokens per
    minute, which one request cannot exceed either; None is no limit."""
    if limit is not None and max_tokens > limit:
        unit = " tokens per minute" if tenant else ""
        whose = "your tenant's limit" if tenant else "the limit"
        raise errors.InvalidRequest(
            f"max_tokens is {max_tokens}; {whose} is {limit}{unit}.",
            param="max_tokens",
            code="max_tokens_too_large",
        )
