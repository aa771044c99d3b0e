"""Two gateway processes on one Redis share a tenant's limit: a tenant allowed 60
requests per minute gets exactly 60 across both gateways, then 429s from either."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from service.processes import MODEL, Cluster
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy


def test_sixty_per_minute_across_two_gateways(tmp_path):
    keys = KeyFile(tenants={"radiology": TenantPolicy(requests_per_minute=60)})
    key = keys.create("radiology")
    other = keys.create("pathology")
    path = tmp_path / "keys.json"
    keys.save(path)
    cluster = Cluster(tmp_path, GMAIVL_AUTH="keys", GMAIVL_API_KEYS_FILE=str(path))
    try:
        cluster.add_worker(max_concurrency=16)
        gateways = [cluster.add_gateway(), cluster.add_gateway()]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

        def send(i: int, with_key: str = key) -> httpx.Response:
            return httpx.post(
                gateways[i % 2] + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {with_key}"},
                timeout=60,
            )

        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(send, range(80)))
        statuses = [r.status_code for r in first]
        assert statuses.count(200) == 60 and statuses.count(429) == 20, statuses
        for i in range(2):  # both gateways refuse now, naming the limit
            r = send(i)
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "tenant_requests_per_minute"
            assert 1 <= int(r.headers["retry-after"]) <= 60
        assert send(0, other).status_code == 200  # another tenant is unaffected
    finally:
        cluster.close()
