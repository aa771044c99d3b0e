"""Token claims -> tenant: by name, by the key file's explicit mapping, refusals that
say what is missing without repeating the user's groups."""

from __future__ import annotations

import pytest

from service import errors
from service.security.claims import claim_values, tenant_for
from service.security.keys import KeyFile

KEYS = KeyFile.parse(
    """{"version": 1,
        "tenants": {"radiology": {"requests_per_minute": 5}, "emergency": {}, "research": {}},
        "claim_tenants": {"/Hospital/Radiologists": "radiology", "grp-ed-7f3a": "emergency"},
        "keys": []}"""
)


def test_a_dotted_path_reaches_nested_claims():
    claims = {"realm_access": {"roles": ["radiology", 7, "offline_access"]}, "groups": "x"}
    assert claim_values(claims, "realm_access.roles") == ["radiology", "offline_access"]
    assert claim_values(claims, "groups") == ["x"]
    assert claim_values(claims, "realm_access.missing") == []
    assert claim_values(claims, "groups.deeper") == []


def test_a_value_equal_to_a_declared_tenant_selects_it():
    assert tenant_for({"groups": ["staff", "research"]}, "groups", KEYS) == "research"


def test_an_explicit_mapping_selects_a_tenant_and_decides_over_names():
    assert tenant_for({"groups": ["grp-ed-7f3a"]}, "groups", KEYS) == "emergency"
    claims = {"groups": ["/Hospital/Radiologists", "research", "emergency"]}
    assert tenant_for(claims, "groups", KEYS) == "radiology"


@pytest.mark.parametrize(
    ("groups", "code"),
    [
        (["staff", "nurses"], "no_tenant"),
        ([], "no_tenant"),
        (["research", "emergency"], "ambiguous_tenant"),
        (["/Hospital/Radiologists", "grp-ed-7f3a"], "ambiguous_tenant"),
    ],
)
def test_no_tenant_or_two_tenants_is_a_403_that_lists_no_groups(groups, code):
    with pytest.raises(errors.PermissionDenied) as caught:
        tenant_for({"groups": groups}, "groups", KEYS)
    assert caught.value.code == code
    assert errors.to_error_response(caught.value).status_code == 403
    assert "'groups'" in caught.value.message
    for value in [*groups, "radiology", "emergency", "research"]:
        assert value not in caught.value.message


def test_the_key_file_keeps_its_claim_mapping_across_a_save(tmp_path):
    path = tmp_path / "keys.json"
    KEYS.save(path)
    assert KeyFile.load(path).claim_tenants == KEYS.claim_tenants
    with pytest.raises(ValueError, match="claim_tenants"):
        KeyFile.parse('{"version": 1, "claim_tenants": {"g": "not a tenant!"}}')
