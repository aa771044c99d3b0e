"""Podman for the container tests: the repository's podman settings, the images
`make images` builds (built once per session, layers cached across runs), and the
checks each image promises (docs/deployment.md, "What the images promise").

Each check returns a list of broken promises (empty: kept), so a test can show it
holds on our images and that it catches a deliberately broken one.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.deploy.assets import ROOT

PODMAN_DIR = ROOT / "deploy" / "podman"
TAG = os.environ.get("GMAIVL_TAG", "dev")
GATEWAY = f"localhost/gmai-vl-gateway:{TAG}"
WORKER_CPU = f"localhost/gmai-vl-worker-cpu:{TAG}"
REDIS_DEBIAN = f"localhost/gmai-vl-redis-debian:{TAG}"
BUILD_TIMEOUT = 45 * 60  # a cold build on 2 shared cores; warm it is seconds
UID = "10001"
# The trained demo model lives in the compose stack's worker cache volume: the
# compose test's worker trains it on its first start; other tests reuse it.
COMPOSE_PROJECT = "gmai-vl-test"
DEMO_VOLUME = f"{COMPOSE_PROJECT}_worker-cache"
DEMO = "demo-demo/final"  # under the cache: what service.cli.ensure_demo_model trains
HELD_OUT = "demo-data-demo/heldout/ct-demo/images/00000.png"
DEMO_TIMEOUT = 30 * 60  # training on 2 shared cores, cold

# Files that must never be in an image layer: model weights and secrets.
# (`.pth` alone is also Python's path-config suffix, `.bin`/`.pt` also package data:
# those count as weights under a model's usual names.)
WEIGHTS = re.compile(
    r"\.(safetensors|gguf|ckpt)$"
    r"|(^|/)(pytorch_model|model|adapter_model|consolidated|checkpoint)[-\w.]*\.(bin|pt|pth)$"
)
SECRETS = re.compile(
    r"(^|/)(api-keys\.json|pacs(\.dev)?\.json|\.netrc|\.pypirc|id_(rsa|ed25519|ecdsa)|"
    r"[^/]*\.key)$|^run/secrets/."
)


@functools.cache
def storage_conf() -> str:
    """overlay where root may mount it here, else vfs (the Makefile asks the same script)."""
    script = PODMAN_DIR / "storage-conf.sh"
    return subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout.strip()


def env() -> dict[str, str]:
    """The environment podman runs with here (the Makefile exports the same)."""
    return {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(PODMAN_DIR / "containers.conf")),
        "CONTAINERS_STORAGE_CONF": os.environ.get("CONTAINERS_STORAGE_CONF") or storage_conf(),
        "GMAIVL_TAG": TAG,
    }


def podman_available() -> bool:
    return shutil.which("podman") is not None and os.geteuid() == 0


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


def require_podman() -> None:
    if not podman_available():
        pytest.skip("podman (rootful) is not installed here: `make podman` installs it")


@functools.cache
def build_images() -> float:
    """`make images`' script, once per session: seconds it took (cached layers make a
    later session's build fast)."""
    start = time.monotonic()
    result = subprocess.run(
        [str(PODMAN_DIR / "build-images.sh"), "gateway", "worker-cpu"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return time.monotonic() - start


def inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


def run(image: str, *args: str, entrypoint: str | None = None, timeout: float = 120, **kw):
    options = ["--entrypoint", entrypoint] if entrypoint else []
    return podman("run", "--rm", "--read-only", *options, image, *args, timeout=timeout, **kw)


# ---- the promises ----


def unprivileged(image: str) -> list[str]:
    """Runs as user 10001 by default (the config and a process started in it)."""
    broken = []
    user = inspect(image)["Config"].get("User", "")
    if user.split(":")[0] != UID:
        broken.append(f"image user is {user or 'root'!r}, not {UID}")
    uid = run(image, "-c", "import os; print(os.getuid())", entrypoint="python", check=False)
    if uid.stdout.strip() != UID:
        broken.append(f"a process in it runs as uid {uid.stdout.strip() or uid.stderr[-200:]}")
    return broken


def healthcheck(image: str) -> list[str]:
    """The image's HEALTHCHECK test (podman's inspect has it at the top level)."""
    found = inspect(image)
    return (found.get("Healthcheck") or found["Config"].get("Healthcheck") or {}).get("Test") or []


def exec_form(image: str) -> list[str]:
    """Entrypoint, command and health check need no shell (exec form, no `sh -c`)."""
    config = inspect(image)["Config"]
    broken = []
    entry = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
    if not entry or entry[0] in ("/bin/sh", "sh", "/bin/bash", "bash"):
        broken.append(f"entrypoint/command runs through a shell: {entry}")
    health = healthcheck(image)
    if not health or health[0] != "CMD" or health[1] in ("/bin/sh", "sh", "/bin/bash", "bash"):
        broken.append(f"health check missing or through a shell: {health}")
    return broken


def layer_files(image: str, workdir: Path) -> dict[str, list[str]]:
    """Every path in every layer of the image (what `docker save` would ship)."""
    out = workdir / "image"
    podman("save", "--format", "docker-dir", "-o", str(out), image, timeout=900)
    manifest = json.loads((out / "manifest.json").read_text())
    found: dict[str, list[str]] = {}
    for layer in manifest["layers"]:
        digest = layer["digest"].split(":", 1)[1]
        with tarfile.open(out / digest, mode="r|*") as tar:
            found[digest] = [member.name.lstrip("./") for member in tar]
    shutil.rmtree(out)
    return found


def no_weights_or_secrets(image: str, workdir: Path) -> list[str]:
    broken = []
    for digest, names in layer_files(image, workdir).items():
        for name in names:
            if WEIGHTS.search(name) or SECRETS.search(name):
                broken.append(f"layer {digest[:12]}: {name}")
    return broken


def pip_check(image: str) -> list[str]:
    result = run(image, "-m", "pip", "check", entrypoint="python", check=False)
    return [] if result.returncode == 0 else [result.stdout + result.stderr]


def torch_build(image: str) -> str:
    """'none', 'cpu' or 'cuda': what torch the image has."""
    probe = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('torch') is None: print('none'); sys.exit()\n"
        "import torch; print('cuda' if torch.version.cuda else 'cpu', torch.__version__)"
    )
    return run(image, "-c", probe, entrypoint="python").stdout.strip()


def healthy_read_only(
    image: str, name: str, *args: str, options: tuple[str, ...] = (), timeout: float = 90
) -> list[str]:
    """Started read-only (only /tmp and the cache on tmpfs) with the shells made
    unusable, its HEALTHCHECK passes (`podman healthcheck run`: no systemd timers)."""
    podman("rm", "-f", name, check=False)
    no_shell = [f"--volume=/dev/null:{shell}:ro" for shell in ("/usr/bin/dash", "/usr/bin/bash")]
    podman(
        "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
        "--tmpfs", "/var/cache/gmai-vl", *no_shell, *options, image, *args,
    )  # fmt: skip
    broken = ["health check never passed"]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            if not state["Running"]:
                logs = podman("logs", name, check=False)
                broken = [f"exited {state['ExitCode']}: {(logs.stdout + logs.stderr)[-1500:]}"]
                break
            if podman("healthcheck", "run", name, check=False).returncode == 0:
                broken = []
                break
            time.sleep(1)
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)
    return broken


def demo_volume_path() -> Path:
    """The demo volume's `gmai-vl` cache directory on this host (rootful podman)."""
    volume = json.loads(podman("volume", "inspect", DEMO_VOLUME).stdout)[0]
    return Path(volume["Mountpoint"]) / "gmai-vl"


def ensure_demo_volume() -> str:
    """The volume with the trained demo model; trained in a worker-cpu container
    (as the compose worker does on first start) when it is not there yet."""
    if podman("volume", "exists", DEMO_VOLUME, check=False).returncode != 0:
        podman("volume", "create", DEMO_VOLUME)
    if not (demo_volume_path() / DEMO / "config.json").exists():
        train = (
            "from pathlib import Path; from service.cli import ensure_demo_model; "
            "ensure_demo_model(Path('/var/cache/gmai-vl/gmai-vl'))"
        )
        podman(
            "run", "--rm", "--read-only", "--tmpfs", "/tmp",
            "--volume", f"{DEMO_VOLUME}:/var/cache/gmai-vl", "--entrypoint", "python",
            WORKER_CPU, "-c", train, timeout=DEMO_TIMEOUT,
        )  # fmt: skip
    return DEMO_VOLUME
