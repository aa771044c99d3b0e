"""`gmai-vl read`: a small client of the study-read API for operators and scripts.

    gmai-vl read --base-url URL --study UID [--series UID] [--prompt TEXT] [--wait]

Without `--wait` it prints the submitted read's id and exits; with `--wait` it
polls until the read ends, prints the answer and where the SR was stored, and
exits 1 when the read failed. The key comes from `--api-key` or GMAIVL_API_KEY.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

import httpx

from service.reads.model import TERMINAL, ReadStatus


def add_read_command(sub: argparse._SubParsersAction) -> None:
    read = sub.add_parser("read", help="ask the server for an AI read of a study in its PACS")
    read.add_argument("--base-url", required=True, help="The server, e.g. http://gateway:8000")
    read.add_argument("--study", required=True, help="Study Instance UID")
    read.add_argument("--series", help="Series Instance UID (default: every image series)")
    read.add_argument("--instance", action="append", help="SOP Instance UID (repeatable)")
    read.add_argument("--prompt", help="The question (default: a short findings report)")
    read.add_argument("--model", help="Model id (default: the server's first model)")
    read.add_argument("--pacs", help="PACS name (default: the server's only PACS)")
    read.add_argument("--priority", choices=("stat", "urgent", "routine", "batch"))
    read.add_argument("--max-tokens", type=int)
    read.add_argument("--no-store", action="store_true", help="Do not store the SR in the PACS")
    read.add_argument("--wait", action="store_true", help="Wait for the read and print it")
    read.add_argument("--timeout", type=float, default=600.0, help="Seconds --wait waits")
    read.add_argument(
        "--api-key", default=os.environ.get("GMAIVL_API_KEY"), help="Default: $GMAIVL_API_KEY"
    )
    read.set_defaults(func=run_read)


def run_read(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.base_url.rstrip("/"), headers=headers, timeout=30) as client:
        model = args.model or _first_model(client)
        body: dict[str, Any] = {"model": model, "study_instance_uid": args.study}
        optional = {
            "series_instance_uid": args.series,
            "sop_instance_uids": args.instance,
            "prompt": args.prompt,
            "pacs": args.pacs,
            "priority": args.priority,
            "max_tokens": args.max_tokens,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if args.no_store:
            body["store"] = False
        response = client.post("/v1/dicom/reads", json=body)
        if response.status_code != 202:
            return _refused(response)
        read = response.json()
        if not args.wait:
            print(f"{read['id']} {read['status']}", file=out)
            return 0
        deadline = time.monotonic() + args.timeout
        while read["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                print(f"{read['id']} still {read['status']}", file=sys.stderr)
                return 2
            time.sleep(0.5)
            polled = client.get(f"/v1/dicom/reads/{read['id']}")
            if polled.status_code != 200:
                return _refused(polled)
            read = polled.json()
    return _report(read, out)


def _first_model(client: httpx.Client) -> str:
    models = client.get("/v1/models").raise_for_status().json()["data"]
    if not models:
        raise SystemExit("the server lists no model yet; pass --model")
    return models[0]["id"]


def _refused(response: httpx.Response) -> int:
    try:
        error = response.json()["error"]
        print(f"HTTP {response.status_code} {error['code']}: {error['message']}", file=sys.stderr)
    except (ValueError, KeyError, TypeError):
        print(f"HTTP {response.status_code}", file=sys.stderr)
    return 1


def _report(read: dict[str, Any], out: TextIO) -> int:
    print(f"{read['id']} {read['status']}", file=out)
    if read["status"] != ReadStatus.COMPLETED:
        error = read.get("error") or {}
        print(f"{error.get('code', read['status'])}: {error.get('message', '')}", file=sys.stderr)
        return 1
    print(read["answer"], file=out)
    sr = read["sr"]
    where = "stored in the PACS" if sr["stored"] else "not stored (GET .../sr)"
    print(
        f"SR {where}: study {sr['study_instance_uid']} series {sr['series_instance_uid']} "
        f"instance {sr['sop_instance_uid']}",
        file=out,
    )
    return 0
