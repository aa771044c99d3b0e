"""Weight files in, shards out, one tensor at a time.

A source is read through its shard index (or its one file): safetensors are
opened lazily, so a tensor is read only when it is converted; a `.bin` shard is
memory-mapped while its tensors are converted. The writer flushes a shard once
it holds `max_shard_bytes`, so at most one output shard and one source tensor
are in memory: a 7B model never exists twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


class TensorSource(Protocol):
    """Named tensors of one checkpoint part, readable one at a time."""

    def files(self) -> list[Path]: ...

    def names(self) -> list[str]: ...

    def get(self, key: str) -> torch.Tensor: ...


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a Hugging Face directory, from its index when it has one."""
    for index in (SAFE_INDEX, BIN_INDEX, "adapter_model.safetensors.index.json"):
        path = directory / index
        if path.is_file():
            names = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            return [directory / n for n in names]
    for single in (
        "model.safetensors",
        "pytorch_model.bin",
        "adapter_model.safetensors",
        "adapter_model.bin",
    ):
        if (directory / single).is_file():
            return [directory / single]
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    return files


class FileTensors:
    """The tensors of a list of weight files (safetensors opened lazily, .bin memory-mapped)."""

    def __init__(self, paths: list[Path]) -> None:
        if not paths:
            raise FileNotFoundError("no weight files")
        self.paths = paths
        self._where: dict[str, Path] = {}
        for path in paths:
            for key in _file_keys(path):
                self._where[key] = path
        self._bin_path: Path | None = None
        self._bin: dict[str, torch.Tensor] = {}

    def files(self) -> list[Path]:
        return list(self.paths)

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        path = self._where[key]
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                return f.get_tensor(key)
        if self._bin_path != path:  # one .bin shard mapped at a time
            self._bin = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            self._bin_path = path
        return self._bin[key]


def _file_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    return list(torch.load(path, map_location="meta", mmap=True, weights_only=True))


class MetaTensors:
    """Shapes only, as tensors on the meta device: imports a 7B layout with no weights."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> None:
        self.shapes = shapes
        self.dtype = dtype

    def files(self) -> list[Path]:
        return []

    def names(self) -> list[str]:
        return list(self.shapes)

    def get(self, key: str) -> torch.Tensor:
        return torch.empty(self.shapes[key], dtype=self.dtype, device="meta")


class TensorSink(Protocol):
    def add(self, key: str, tensor: torch.Tensor) -> None: ...

    def close(self) -> list[Path]: ...


class ShardWriter:
    """Writes tensors into safetensors shards of at most `max_shard_bytes`, then the index."""

    def __init__(self, out: Path, max_shard_bytes: int = 4 << 30) -> None:
        self.out = out
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[key] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.out / f"shard-{len(self._written):05d}.tmp"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._written.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        if self._pending or not self._written:
            self._flush()
        count = len(self._written)
        if count == 1:
            path = self.out / "model.safetensors"
            self._written[0][0].rename(path)
            return [path]
        weight_map: dict[str, str] = {}
        paths = []
        for i, (tmp, keys) in enumerate(self._written):
            name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            tmp.rename(self.out / name)
            paths.append(self.out / name)
            weight_map.update(dict.fromkeys(keys, name))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return paths


class ShapeSink:
    """Records names, shapes and dtypes instead of writing (the meta-device import)."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}

    def add(self, key: str, tensor: torch.Tensor) -> None:
        self.shapes[key] = tuple(tensor.shape)
        self.dtypes[key] = tensor.dtype

    def close(self) -> list[Path]:
        return []
