"""The one image-count and max_tokens checks every route uses (chat, render, reads, tenancy):
the server's limit and the tenant's say which they are; None is no limit."""

from __future__ import annotations

import pytest

from service import errors
from service.serving.limits import check_image_count, check_max_tokens


def test_image_count_against_the_server_and_the_tenant_limit():
    check_image_count(4, 4, param="messages")
    check_image_count(99, None, param="messages", tenant=True)
    with pytest.raises(errors.InvalidRequest) as server:
        check_image_count(5, 4, param="image_url")
    assert (server.value.code, server.value.param) == ("too_many_images", "image_url")
    assert "the limit is 4" in server.value.message
    with pytest.raises(errors.InvalidRequest) as tenant:
        check_image_count(3, 2, param="messages", tenant=True)
    assert "your tenant's limit is 2" in tenant.value.message


def test_max_tokens_against_the_server_and_the_tenant_limit():
    check_max_tokens(10, 10)
    check_max_tokens(10**6, None, tenant=True)
    with pytest.raises(errors.InvalidRequest) as server:
        check_max_tokens(11, 10)
    assert (server.value.code, server.value.param) == ("max_tokens_too_large", "max_tokens")
    assert server.value.message == "max_tokens is 11; the limit is 10."
    with pytest.raises(errors.InvalidRequest) as tenant:
        check_max_tokens(11, 10, tenant=True)
    assert tenant.value.message == "max_tokens is 11; your tenant's limit is 10 tokens per minute."
