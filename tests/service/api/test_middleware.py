from service.api.middleware import request_id_from, route_label


def test_route_labels_are_a_closed_set():
    assert route_label("/v1/chat/completions") == "/v1/chat/completions"
    assert route_label("/v1/models/some-private-name") == "/v1/models/{model}"
    assert route_label("/v1/anything/else") == "other"
    assert route_label("/patients/123") == "other"


def test_request_id_accepts_sane_tokens_only():
    assert request_id_from(b"pacs-7f3a.2:1") == "pacs-7f3a.2:1"
    for bad in (None, b"", b"has space", b"x" * 129, "\u00e9".encode()):
        made = request_id_from(bad)
        assert len(made) == 32 and made != bad
