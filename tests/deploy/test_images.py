"""What the images promise, checked on the images `make images` builds (podman,
no daemon): user 10001, no shell needed, a read-only root filesystem with the
HEALTHCHECK passing, no weights or secrets in any layer, `pip check` clean,
`gmai-vl --help`/`--version`, no torch in the gateway, CPU torch in worker-cpu.

Each check is also shown to catch an image that breaks it (a derived image run
as root, one that writes to its root filesystem, one with a weight file in a
layer, one whose health check needs a shell)."""

from __future__ import annotations

import tomllib

import pytest

from tests.deploy import containers as c
from tests.deploy.assets import ROOT

pytestmark = pytest.mark.timeout(c.BUILD_TIMEOUT + 600)

GATEWAY_ARGS = ("gateway", "--redis-url=redis://127.0.0.1:1/0")
AUTH_OFF = ("--env=GMAIVL_AUTH=off",)


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    c.require_podman()
    c.build_images()
    return {"gateway": c.GATEWAY, "worker-cpu": c.WORKER_CPU}


@pytest.fixture(scope="module")
def broken(images, tmp_path_factory) -> dict[str, str]:
    """Images derived from the gateway, each breaking one promise."""
    context = tmp_path_factory.mktemp("broken")
    (context / "model.safetensors").write_bytes(b"\0" * 64)
    made = {}
    variants = {
        "root": "USER root",
        "writes-root": 'ENTRYPOINT ["python", "-c", "open(\'/opt/gmai-vl/state\', \'w\'); '
        'import time; time.sleep(60)"]',
        "weights": "COPY model.safetensors /opt/gmai-vl/model.safetensors",
        "shell-health": "HEALTHCHECK CMD curl -f http://127.0.0.1:8000/health/live || exit 1",
    }
    for name, line in variants.items():
        (context / f"{name}.Containerfile").write_text(f"FROM {images['gateway']}\n{line}\n")
        tag = f"localhost/gmai-vl-broken-{name}:test"
        c.podman("build", "--format", "docker", "-f", str(context / f"{name}.Containerfile"),
                 "-t", tag, str(context), timeout=300)  # fmt: skip
        made[name] = tag
    yield made
    for tag in made.values():
        c.podman("rmi", "-f", tag, check=False)


@pytest.mark.parametrize("target", ["gateway", "worker-cpu"])
def test_runs_as_10001_without_a_shell(images, target):
    assert c.unprivileged(images[target]) == []
    assert c.exec_form(images[target]) == []


def test_the_checks_catch_root_and_a_shell_health_check(broken):
    assert c.unprivileged(broken["root"])
    assert c.exec_form(broken["shell-health"])


def test_gateway_is_healthy_on_a_read_only_root_without_a_shell(images):
    assert c.healthy_read_only(images["gateway"], "gmai-vl-test-ro", *GATEWAY_ARGS,
                               options=AUTH_OFF) == []  # fmt: skip


def test_the_read_only_check_catches_an_image_that_writes_its_root(broken):
    assert c.healthy_read_only(broken["writes-root"], "gmai-vl-test-ro-bad", timeout=30)


@pytest.mark.parametrize("target", ["gateway", "worker-cpu"])
def test_no_weights_or_secrets_in_any_layer(images, target, tmp_path):
    assert c.no_weights_or_secrets(images[target], tmp_path) == []


def test_the_layer_check_catches_a_weight_file(broken, tmp_path):
    found = c.no_weights_or_secrets(broken["weights"], tmp_path)
    assert any("opt/gmai-vl/model.safetensors" in line for line in found), found


@pytest.mark.parametrize("target", ["gateway", "worker-cpu"])
def test_pip_check_is_clean(images, target):
    assert c.pip_check(images[target]) == []


@pytest.mark.parametrize("target", ["gateway", "worker-cpu"])
def test_help_and_version(images, target):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert c.run(images[target], "--version").stdout.strip() == f"gmai-vl {version}"
    help_text = c.run(images[target], "--help").stdout
    for command in ("serve", "gateway", "worker", "keys", "train"):
        assert command in help_text
    labels = c.inspect(images[target])["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == version


def test_gateway_has_no_torch_and_worker_cpu_has_cpu_torch(images):
    assert c.torch_build(images["gateway"]) == "none"
    build = c.torch_build(images["worker-cpu"])
    assert build.startswith("cpu 2.13.0+cpu"), build


def test_the_healthcheck_survives_the_image_format(images):
    """podman's default OCI format drops HEALTHCHECK: the build must use --format docker."""
    for image in images.values():
        assert c.healthcheck(image)[:1] == ["CMD"], image
