"""Wheels for the lent GPU machine (`make gpu-wheels` -> `.whl/`, ignored by git).

The device has Python 3.12, its own torch 2.11 + CUDA, transformers, tokenizers,
safetensors, pillow, httpx, prometheus-client, numpy, sentencepiece, protobuf, tqdm
and more (DEVICE_HAS, from the device tool's KINDS.md), and no network. What the
gateway and the import need beyond that is found by walking this environment's
installed requirements from `gmai-vl` (base install, no extras: the device brings
its own worker and import packages), stopping at what the device has; each is
fetched as a Python 3.12 manylinux wheel at the version installed here (the versions
the tests ran with). The project itself is built as a wheel too, installed there
with `--no-deps` (docs/benchmarks.md has the one `device` call).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# Installed on the device image (KINDS.md, "Python packages already there"): never
# carried, so nothing of ours shadows the torch stack there.
DEVICE_HAS = {
    canonicalize_name(name)
    for name in (
        "torch", "transformers", "tokenizers", "safetensors", "pillow", "httpx", "httpcore",
        "h11", "anyio", "idna", "certifi", "sniffio", "prometheus-client", "numpy",
        "packaging", "pyyaml", "click", "uvloop", "sentencepiece", "protobuf", "tqdm",
        "huggingface-hub", "jinja2", "markupsafe", "peft", "accelerate", "annotated-doc",
        "filelock", "fsspec", "regex", "requests", "urllib3", "charset-normalizer", "psutil",
    )
}  # fmt: skip
PY312 = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
         "platform_system": "Linux", "platform_machine": "x86_64",
         "platform_python_implementation": "CPython", "implementation_name": "cpython"}  # fmt: skip
# The device's glibc is 2.39 (Ubuntu 24.04's Python 3.12.3); pip matches tags exactly.
PLATFORMS = (
    *(f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def missing(root: str = "gmai-vl") -> dict[str, str]:
    """{name: installed version} of every requirement below `root` the device lacks."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError as exc:
            raise SystemExit(f"{name} is not installed here: `make install` first") from exc
        for line in dist.requires or ():
            req = Requirement(line)
            env_extras = extras or {""}
            if req.marker and not any(
                req.marker.evaluate(PY312 | {"extra": e}) for e in env_extras
            ):
                continue  # another Python, platform or extra
            key = canonicalize_name(req.name)
            if key in DEVICE_HAS or key == canonicalize_name(root):
                continue
            if key not in found:
                try:
                    found[key] = distribution(req.name).version
                except PackageNotFoundError as exc:
                    raise SystemExit(
                        f"{req.name} (needed by {name}) is not installed here"
                    ) from exc
            todo.append((req.name, frozenset(req.extras)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    pins = [f"{name}=={version}" for name, version in sorted(missing().items())]
    platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms,
         "-d", str(args.out), *pins],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(args.out), str(ROOT)],
        check=True,
    )
    wheels = sorted(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {args.out}:")
    for wheel in wheels:
        print("  " + wheel.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
