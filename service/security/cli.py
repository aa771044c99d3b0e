"""`gmai-vl keys create|list|revoke|policy|claim`: manage the key file (format: `keys`).

Each command reads the file, changes it and writes it back atomically; running
gateways pick the change up within `GMAIVL_API_KEYS_RELOAD_INTERVAL` seconds.
`create` prints the new key once, on stdout and alone, so it can be piped into
a secret store; nothing else ever shows it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from service.core.lanes import Lane
from service.security.keys import KeyFile, valid_tenant

POLICY_FLAGS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "max_images_per_request",
)


def add_keys_commands(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys and tenant policies (docs/security.md)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    create = keys_sub.add_parser("create", help="add a key for a tenant; prints it once")
    _file_flag(create)
    create.add_argument("--tenant", required=True, help="tenant id (A-Z a-z 0-9 . _ -)")
    create.add_argument("--name", default="", help="what the key is for (shown in list)")
    create.set_defaults(func=run_create)

    listing = keys_sub.add_parser("list", help="keys (ids, never secrets) and tenant policies")
    _file_flag(listing)
    listing.set_defaults(func=run_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    _file_flag(revoke)
    revoke.add_argument("key_id", help="the 12-hex id (gmai-<id>-...)")
    revoke.set_defaults(func=run_revoke)

    policy = keys_sub.add_parser("policy", help="set a tenant's limits (unset flags unchanged)")
    _file_flag(policy)
    policy.add_argument("--tenant", required=True)
    for flag in POLICY_FLAGS:
        policy.add_argument("--" + flag.replace("_", "-"), type=int, metavar="N")
    policy.add_argument("--max-priority", choices=[lane.value for lane in Lane])
    policy.add_argument("--models", help="comma-separated model ids it may use")
    policy.set_defaults(func=run_policy)

    claim = keys_sub.add_parser(
        "claim", help="map a value of the IdP tokens' tenant claim to a tenant (claim_tenants)"
    )
    _file_flag(claim)
    claim.add_argument("value", help="the claim value, e.g. a group path or a group object id")
    target = claim.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", help="the tenant tokens with this value belong to")
    target.add_argument("--remove", action="store_true", help="remove the mapping")
    claim.set_defaults(func=run_claim)


def _file_flag(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("GMAIVL_API_KEYS_FILE")
    parser.add_argument(
        "--file",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help="the key file (default: $GMAIVL_API_KEYS_FILE)",
    )


def run_create(args: argparse.Namespace) -> int:
    keys = KeyFile.load_or_new(args.file)
    try:
        key = keys.create(args.tenant, args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys.save(args.file)
    print(
        f"created key {keys.keys[-1].id} for tenant {args.tenant}; it is shown only now:",
        file=sys.stderr,
    )
    print(key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    keys = KeyFile.load(args.file)
    print(f"{'id':<12}  {'tenant':<20}  {'created':<20}  {'revoked':<20}  name")
    for r in keys.keys:
        print(f"{r.id:<12}  {r.tenant:<20}  {r.created:<20}  {r.revoked or '-':<20}  {r.name}")
    for tenant, policy in keys.tenants.items():
        print(f"tenant {tenant}: {policy.to_json() or 'no limits'}")
    print(f"default policy: {keys.default_policy.to_json() or 'no limits'}")
    for value, tenant in keys.claim_tenants.items():
        print(f"claim value {value!r} -> tenant {tenant}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    keys = KeyFile.load(args.file)
    try:
        record = keys.revoke(args.key_id)
    except KeyError:
        print(f"error: no key with id {args.key_id}", file=sys.stderr)
        return 1
    keys.save(args.file)
    print(f"revoked {record.id} (tenant {record.tenant}) at {record.revoked}", file=sys.stderr)
    return 0


def run_policy(args: argparse.Namespace) -> int:
    if not valid_tenant(args.tenant):
        print("error: a tenant id is 1-64 characters of A-Z a-z 0-9 . _ -", file=sys.stderr)
        return 2
    keys = KeyFile.load_or_new(args.file)
    changes: dict[str, object] = {
        flag: getattr(args, flag) for flag in POLICY_FLAGS if getattr(args, flag) is not None
    }
    if args.max_priority is not None:
        changes["max_priority"] = Lane(args.max_priority)
    if args.models is not None:
        changes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    keys.tenants[args.tenant] = replace(keys.policy_of(args.tenant), **changes)
    keys.save(args.file)
    print(f"tenant {args.tenant}: {keys.tenants[args.tenant].to_json()}", file=sys.stderr)
    return 0


def run_claim(args: argparse.Namespace) -> int:
    keys = KeyFile.load_or_new(args.file)
    if args.remove:
        if keys.claim_tenants.pop(args.value, None) is None:
            print("error: no mapping for that claim value", file=sys.stderr)
            return 1
        keys.save(args.file)
        print("claim mapping removed", file=sys.stderr)
        return 0
    if not valid_tenant(args.tenant) or not args.value:
        print("error: a tenant id is 1-64 characters of A-Z a-z 0-9 . _ -", file=sys.stderr)
        return 2
    keys.claim_tenants[args.value] = args.tenant
    keys.save(args.file)
    print(f"claim value {args.value!r} -> tenant {args.tenant}", file=sys.stderr)
    return 0
