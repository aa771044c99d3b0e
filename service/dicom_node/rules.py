"""Routing rules: which received study is read, how, and where its SR goes.

A YAML file (docs/pacs.md), validated whole at start-up (every error at once,
never at the first study):

    rules:
      - name: chest-ct
        match: {modality: CT, body_part: CHEST}
        read: {model: gmai-vl-demo, prompt: "...", priority: routine, tenant: radiology}
        send_to: {ae_title: PACS, host: 10.0.0.5, port: 104}   # or {pacs: NAME}: STOW-RS
      - name: rest
        match: {}
        ignore: true

Matching: rules are tried in order and the first that matches wins; a study no
rule matches is not read. Study-level conditions (`calling_ae`,
`study_description`) must hold for the study; series-level conditions
(`modality`, `body_part`, `sop_class`, `series_description`) must hold for at
least one image instance, and a read shows only the instances that satisfy
them. Text values compare exactly (modality and body part case-insensitively);
descriptions are regular expressions searched in the value. Instances that
hold no picture (SR, KO, presentation states) never match series conditions
and are never read: a study of only those (our own SR, routed back) is not read,
whatever the rules say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.core.lanes import Lane

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _sop_class_uid(value: str) -> str:
    """A SOP Class UID, or its pydicom keyword (`CTImageStorage`)."""
    if UID_RE.match(value):
        return value
    from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

    for uid, entry in UID_dictionary.items():
        if entry[4] == value:
            return str(uid)
    raise ValueError(f"unknown SOP class {value!r} (a UID or a keyword like CTImageStorage)")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calling_ae: list[str] | None = None
    modality: list[str] | None = None
    body_part: list[str] | None = None
    sop_class: list[str] | None = None
    study_description: str | None = Field(None, description="A regular expression.")
    series_description: str | None = Field(None, description="A regular expression.")

    _lists = field_validator("calling_ae", "modality", "body_part", "sop_class", mode="before")(
        _one_or_many
    )

    @field_validator("modality", "body_part")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return [v.strip().upper() for v in value] if value is not None else None

    @field_validator("calling_ae")
    @classmethod
    def _stripped(cls, value: list[str] | None) -> list[str] | None:
        return [v.strip() for v in value] if value is not None else None

    @field_validator("sop_class")
    @classmethod
    def _uids(cls, value: list[str] | None) -> list[str] | None:
        return [_sop_class_uid(v.strip()) for v in value] if value is not None else None

    @field_validator("study_description", "series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class WindowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    center: float
    width: float = Field(gt=0)
    function: str = "LINEAR"


class ReadAction(BaseModel):
    """What a read of a matching study asks for (the fields of `POST /v1/dicom/reads`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | None = Field(None, min_length=1)
    priority: Lane = Lane.routine
    tenant: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_images: int | None = Field(None, ge=1, description="Instances shown (middle per series).")
    window: str | WindowSpec | None = None
    frames: list[int] | None = None
    json_schema: dict[str, Any] | None = Field(
        None, description="OpenAI json_schema object ({name, schema}); the engine must support it."
    )
    timeout: float | None = Field(None, gt=0, description="Seconds for the whole read.")

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("schema"), dict):
            raise ValueError("json_schema needs a `schema` object (and a `name`)")
        return value

    def response_format(self) -> dict[str, Any] | None:
        if self.json_schema is None:
            return None
        schema = {"name": "read", **self.json_schema}
        return {"type": "json_schema", "json_schema": schema}


class AeDestination(BaseModel):
    """C-STORE to a DICOM node (the PACS's AE)."""

    model_config = ConfigDict(extra="forbid")

    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class PacsDestination(BaseModel):
    """STOW-RS to a configured DICOMweb PACS (by its name in GMAIVL_PACS)."""

    model_config = ConfigDict(extra="forbid")

    pacs: str = Field(min_length=1)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    match: Match = Field(default_factory=Match)
    read: ReadAction | None = None
    ignore: bool = False
    send_to: AeDestination | PacsDestination | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        if (self.read is None) == (not self.ignore):
            raise ValueError("a rule has either `read` or `ignore: true`")
        if self.ignore and self.send_to is not None:
            raise ValueError("an ignore rule sends nothing (drop send_to)")
        return self


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names repeat: {', '.join(dupes)}")
        return self

    def problems(self, tenants: set[str] | None, pacs: set[str]) -> list[str]:
        """What the rules name that this server does not have (tenants: None = keys off)."""
        found = []
        for rule in self.rules:
            tenant = rule.read.tenant if rule.read is not None else None
            if rule.read is not None and tenants is not None and tenant is None:
                found.append(f"rule {rule.name}: keys are on, so a read names its tenant")
            if tenant is not None and tenants is not None and tenant not in tenants:
                found.append(f"rule {rule.name}: tenant {tenant!r} is not in the keys file")
            if isinstance(rule.send_to, PacsDestination) and rule.send_to.pacs not in pacs:
                found.append(f"rule {rule.name}: no PACS named {rule.send_to.pacs!r} is configured")
        return found


class RulesError(Exception):
    """The rules file cannot be used; the message lists every problem."""


def load_rules(path: Path | None) -> RuleSet:
    """The rules file, parsed and validated (no file: no rules, nothing is read)."""
    if path is None:
        return RuleSet()
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RulesError(f"cannot read the rules file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"the rules file {path} is not YAML: {exc}") from None
    try:
        return RuleSet.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        ]
        raise RulesError(f"the rules file {path} is invalid:\n" + "\n".join(lines)) from None


# matching


@dataclass(frozen=True)
class InstanceFacts:
    """What rules look at in one received instance (read from its header)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    modality: str
    body_part: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    path: Path | None = None
    is_image: bool = True


@dataclass(frozen=True)
class StudyFacts:
    study_instance_uid: str
    study_description: str
    calling_aes: tuple[str, ...]
    instances: tuple[InstanceFacts, ...]


@dataclass(frozen=True)
class Decision:
    rule: Rule | None  # None: no rule matched (or no image to read)
    instances: tuple[InstanceFacts, ...]  # the image instances the rule selects
    no_images: bool = False  # the study holds only SR, KO and such: no rule is tried

    @property
    def reads(self) -> bool:
        return self.rule is not None and self.rule.read is not None and bool(self.instances)

    @property
    def outcome(self) -> str:
        """read, ignored, unmatched or no_images (a metric label)."""
        if self.no_images or (self.rule is not None and self.rule.read and not self.instances):
            return "no_images"
        if self.rule is None:
            return "unmatched"
        return "ignored" if self.rule.ignore else "read"

    def describe(self) -> str:
        if self.no_images:
            return "no image instances (SR, KO, ...): not read"
        if self.rule is None:
            return "no rule matches: not read"
        if self.rule.ignore:
            return f"rule {self.rule.name}: ignored"
        if not self.instances:
            return f"rule {self.rule.name}: no image instances: not read"
        series = len({i.series_instance_uid for i in self.instances})
        return f"rule {self.rule.name}: read ({len(self.instances)} instances in {series} series)"


def _instance_matches(match: Match, item: InstanceFacts) -> bool:
    if not item.is_image:
        return False
    if match.modality is not None and item.modality.upper() not in match.modality:
        return False
    if match.body_part is not None and item.body_part.upper() not in match.body_part:
        return False
    if match.sop_class is not None and item.sop_class_uid not in match.sop_class:
        return False
    return not (
        match.series_description is not None
        and re.search(match.series_description, item.series_description) is None
    )


def decide(rules: RuleSet, study: StudyFacts) -> Decision:
    """The first rule that matches `study`, and the instances it reads."""
    if not any(i.is_image for i in study.instances):
        return Decision(None, (), no_images=True)
    for rule in rules.rules:
        match = rule.match
        if match.calling_ae is not None and not set(study.calling_aes) & set(match.calling_ae):
            continue
        if match.study_description is not None and (
            re.search(match.study_description, study.study_description) is None
        ):
            continue
        chosen = tuple(i for i in study.instances if _instance_matches(match, i))
        series_level = (match.modality, match.body_part, match.sop_class, match.series_description)
        if any(c is not None for c in series_level) and not chosen:
            continue
        return Decision(rule, chosen)
    return Decision(None, ())
