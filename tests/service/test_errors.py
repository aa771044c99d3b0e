import pytest

from service import errors


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"),
    [
        (errors.InvalidRequest("m"), 400, "invalid_request_error", None),
        (errors.ImageTooLarge("m"), 413, "invalid_request_error", "image_too_large"),
        (errors.ImageFetchFailed("m"), 400, "invalid_request_error", "image_fetch_failed"),
        (errors.RequestTooLarge("m"), 413, "invalid_request_error", "request_too_large"),
        (errors.UnprocessableImage("m"), 422, "invalid_request_error", "unprocessable_image"),
        (errors.RequestTimeout("m"), 408, "invalid_request_error", "request_timeout"),
        (
            errors.UnsupportedMediaType("m", accept_encoding="identity"),
            415,
            "invalid_request_error",
            "unsupported_media_type",
        ),
        (errors.AuthenticationFailed("m"), 401, "authentication_error", "invalid_api_key"),
        (errors.PermissionDenied("m"), 403, "permission_error", "permission_denied"),
        (errors.ModelNotFound("m"), 404, "invalid_request_error", "model_not_found"),
        (
            errors.NotFound("m", code="read_not_found"),
            404,
            "invalid_request_error",
            "read_not_found",
        ),
        (errors.Overloaded("m", retry_after=7), 429, "rate_limit_error", "queue_full"),
        (
            errors.TenantLimitExceeded("m", limit="requests_per_minute", retry_after=3),
            429,
            "rate_limit_error",
            "tenant_requests_per_minute",
        ),
        (errors.NotReady("m"), 503, "server_error", "not_ready"),
        (errors.PacsError("m", code="pacs_unavailable"), 502, "server_error", "pacs_unavailable"),
        (errors.DeadlineExceeded("m"), 504, "timeout_error", "deadline_exceeded"),
        (errors.EngineError("m"), 500, "server_error", "engine_error"),
    ],
)
def test_each_error_maps_to_its_status_and_openai_envelope(exc, status, type_, code):
    response = errors.to_error_response(exc)
    assert response.status_code == status
    assert response.body == {"error": {"message": "m", "type": type_, "param": None, "code": code}}


def test_overloaded_carries_retry_after_header():
    response = errors.to_error_response(errors.Overloaded("full", retry_after=7))
    assert response.headers == {"Retry-After": "7"}


def test_tenant_limit_carries_retry_after_and_401_asks_for_a_bearer_key():
    limited = errors.TenantLimitExceeded("m", limit="tokens_per_minute", retry_after=12)
    assert errors.to_error_response(limited).headers == {"Retry-After": "12"}
    denied = errors.to_error_response(errors.AuthenticationFailed("m"))
    assert denied.headers == {"WWW-Authenticate": "Bearer"}


def test_unsupported_media_type_names_the_accepted_encoding():
    refused = errors.UnsupportedMediaType("m", accept_encoding="identity")
    assert errors.to_error_response(refused).headers == {"Accept-Encoding": "identity"}


def test_param_and_code_override():
    exc = errors.InvalidRequest("bad", param="max_tokens", code="max_tokens_too_large")
    assert errors.to_error_response(exc).body["error"]["param"] == "max_tokens"
    assert errors.to_error_response(exc).body["error"]["code"] == "max_tokens_too_large"


def test_redacted_traceback_keeps_frames_and_drops_the_message():
    mrn = str(998000 + 877)  # a runtime value, as PHI would be (not in any source line)
    try:
        raise ValueError(f"Patient Jane Roe, MRN {mrn}")
    except ValueError as exc:
        text = errors.redacted_traceback(exc)
    assert mrn not in text and "test_errors.py" in text and "ValueError" in text
