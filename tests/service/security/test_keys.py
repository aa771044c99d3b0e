"""Key format, the key file, and `gmai-vl keys` run as a user would run it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from service.core.lanes import Lane
from service.security.keys import KeyFile, digest, key_id_of, new_key


def gmai_vl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, check=False
    )


def test_a_key_carries_its_public_id_and_256_random_bits():
    key, key_id = new_key()
    assert key.startswith(f"gmai-{key_id}-") and key_id_of(key) == key_id
    assert len(key.split("-", 2)[2]) == 43  # 32 bytes, URL-safe base64
    assert new_key()[0] != key
    for bad in ("", "gmai-", "sk-abc", key + "x", key[:-1], key.replace("gmai", "GMAI")):
        assert key_id_of(bad) is None


def test_the_file_holds_hashes_never_keys(tmp_path):
    path = tmp_path / "keys.json"
    keys = KeyFile()
    key = keys.create("radiology", name="viewer")
    keys.save(path)
    text = path.read_text()
    assert key not in text and key.split("-", 2)[2] not in text
    assert digest(key).hex() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyFile.load(path)
    assert again.keys == keys.keys


def test_bad_files_and_tenants_are_refused(tmp_path):
    with pytest.raises(ValueError):
        KeyFile.parse('{"keys": []}')  # no version
    with pytest.raises(ValueError):
        KeyFile.parse('{"version": 1, "tenants": {"a": {"requests_per_minut": 5}}}')
    with pytest.raises(ValueError):
        KeyFile.parse('{"version": 1, "tenants": {"a": {"requests_per_minute": -1}}}')
    with pytest.raises(ValueError):
        KeyFile().create("no spaces allowed")


def test_cli_create_list_policy_revoke(tmp_path):
    path = tmp_path / "keys.json"
    created = gmai_vl("keys", "create", "--file", str(path), "--tenant", "radiology", "--name", "v")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id = key_id_of(key)
    assert key_id and key not in created.stderr  # stdout holds the key and nothing else

    policy = gmai_vl(
        "keys", "policy", "--file", str(path), "--tenant", "radiology",
        "--requests-per-minute", "60", "--max-priority", "urgent", "--models", "tiny,other",
    )  # fmt: skip
    assert policy.returncode == 0, policy.stderr
    loaded = KeyFile.load(path)
    radiology = loaded.policy_of("radiology")
    assert radiology.requests_per_minute == 60 and radiology.max_priority is Lane.urgent
    assert radiology.models == ("tiny", "other")

    listing = gmai_vl("keys", "list", "--file", str(path))
    assert key_id in listing.stdout and key not in listing.stdout
    assert "requests_per_minute" in listing.stdout

    revoked = gmai_vl("keys", "revoke", "--file", str(path), key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert KeyFile.load(path).keys[0].revoked is not None
    assert gmai_vl("keys", "revoke", "--file", str(path), "000000000000").returncode == 1
    raw = json.loads(path.read_text())
    assert raw["version"] == 1 and raw["keys"][0]["tenant"] == "radiology"


def test_cli_claim_maps_a_token_claim_value_to_a_tenant(tmp_path):
    path = tmp_path / "keys.json"
    group = "/Hospital/Radiologists"
    mapped = gmai_vl("keys", "claim", "--file", str(path), group, "--tenant", "radiology")
    assert mapped.returncode == 0, mapped.stderr
    assert KeyFile.load(path).claim_tenants == {group: "radiology"}
    assert f"'{group}' -> tenant radiology" in gmai_vl("keys", "list", "--file", str(path)).stdout
    bad = gmai_vl("keys", "claim", "--file", str(path), "g", "--tenant", "no spaces!")
    assert bad.returncode == 2
    removed = gmai_vl("keys", "claim", "--file", str(path), group, "--remove")
    assert removed.returncode == 0 and KeyFile.load(path).claim_tenants == {}
    assert gmai_vl("keys", "claim", "--file", str(path), group, "--remove").returncode == 1
