"""Command-line flags derived from `Settings`: a setting is declared once, as a
described pydantic field, and becomes `--flag-name` with that description as
its help, its type, and its choices when it is a Literal.

Flags default to None, so only the flags given override `GMAIVL_*` variables
(which override the fields' defaults). A name like `vllm.dtype` reaches into a
nested settings group and becomes `--dtype`: vLLM's own argument names.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from service.config import Settings

FLAGS_ATTR = "_settings_flags"


def _field(name: str) -> tuple[FieldInfo, type[BaseModel]]:
    model: type[BaseModel] = Settings
    *groups, leaf = name.split(".")
    for group in groups:
        annotation = model.model_fields[group].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation
    return model.model_fields[leaf], model


def _scalar(annotation: Any) -> Any:
    """`int | None` -> int; Literal stays as is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: list[str],
    *,
    required: tuple[str, ...] = (),
    flags_of: argparse.ArgumentParser | None = None,
) -> None:
    """One `--flag` per settings field in `names`; `flags_of` is the subcommand's
    parser when `parser` is one of its argument groups."""
    owner = flags_of or parser
    assert isinstance(owner, argparse.ArgumentParser)
    known = owner.get_default(FLAGS_ATTR) or []
    owner.set_defaults(**{FLAGS_ATTR: [*known, *names]})
    for name in names:
        info, _ = _field(name)
        leaf = name.split(".")[-1]
        kind = _scalar(info.annotation)
        kwargs: dict[str, Any] = {"dest": leaf, "default": None, "help": info.description}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            kwargs["action"] = "append"  # repeatable: --lora a=DIR --lora b=DIR
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        elif isinstance(kind, type) and issubclass(kind, str) and kind is not str:
            kwargs["choices"] = [member.value for member in kind]  # a StrEnum such as Lane
        else:
            kwargs["type"] = kind if kind in (int, float, Path) else str
        if leaf in required:
            kwargs["required"] = True
        parser.add_argument("--" + leaf.replace("_", "-"), **kwargs)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from GMAIVL_* variables, overridden by the flags that were given."""
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for name in getattr(args, FLAGS_ATTR, None) or []:
        value = getattr(args, name.split(".")[-1], None)
        if value is None:
            continue
        *path, leaf = name.split(".")
        if path:
            groups.setdefault(path[0], {})[leaf] = value
        else:
            top[leaf] = value
    for group, values in groups.items():
        _, model = _field(f"{group}.{next(iter(values))}")
        top[group] = model(**values)
    return Settings(**top)
