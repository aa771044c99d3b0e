"""`gmai-vl data build`: sources -> sharded JSONL, a manifest, a mixture file, a bad-file report.

Out folder:

    shards/<source>/part-00000.jsonl   records, `shard_size` per file
    shards/<source>/bad_files.jsonl    files of this source that were skipped, with reasons
    done/<source>.json                 written last: the source is complete (counts, config hash)
    images/<source>/...                images a converter derived (3D slices)
    manifest.json                      counts per source / task / question type / modality / lang
    bad_files.jsonl                    every skipped file of every source
    example_list.json                  the mixture (GMAI-VL format)

Sources convert in parallel worker processes (one source per task). A source
whose `done` marker matches its current config is not redone; an interrupted or
failed one is converted again from scratch on the next run. A file that cannot
be used is reported and skipped, never silently dropped; a source that cannot
be read at all is listed under `failed` and the build exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec
from training.data.mixture import write_mixture

MANIFEST_VERSION = 1
_progress: Any = None  # records written, shared with the worker processes


@dataclass
class BuildConfig:
    sources: list[SourceSpec]
    shard_size: int = 50_000
    """records per JSONL shard"""
    workers: int = 2
    """worker processes; 1 converts in this process"""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {duplicates}")
        unknown = sorted({s.kind for s in self.sources} - set(CONVERTERS))
        if unknown:
            raise ValueError(f"unknown source kinds {unknown}; known: {sorted(CONVERTERS)}")


def load_build_config(path: Path) -> BuildConfig:
    """A YAML or JSON build config; relative source roots are relative to the file."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    sources = []
    for spec in raw.pop("sources"):
        root = Path(spec.pop("root"))
        sources.append(SourceSpec(root=root if root.is_absolute() else path.parent / root, **spec))
    return BuildConfig(sources=sources, **raw)


def spec_hash(spec: SourceSpec) -> str:
    data = asdict(spec)
    data["root"] = str(Path(spec.root).resolve())
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class SourceSummary:
    name: str
    records: int = 0
    bad_files: int = 0
    shards: list[str] = field(default_factory=list)
    image_dir: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    config_hash: str = ""


def _init_worker(counter: Any) -> None:
    global _progress
    _progress = counter


def _advance(n: int) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def convert_source(spec: SourceSpec, out: Path, shard_size: int) -> SourceSummary:
    """Convert one source completely; runs in a worker process."""
    converter = CONVERTERS[spec.kind]
    shard_dir = out / "shards" / spec.name
    shutil.rmtree(shard_dir, ignore_errors=True)  # a partial earlier attempt
    shutil.rmtree(out / "images" / spec.name, ignore_errors=True)
    shard_dir.mkdir(parents=True)
    summary = SourceSummary(spec.name, image_dir=str(converter.image_dir(spec, out).resolve()))
    counters = {k: Counter() for k in ("task", "question_type", "modality", "lang")}
    shard, in_shard = None, 0
    with (shard_dir / "bad_files.jsonl").open("w", encoding="utf-8") as bad:
        for item in converter.items(spec):
            try:
                records = converter.convert(spec, item, out)
            except BadSourceFile as exc:
                reason = str(exc)
            except Exception as exc:  # one broken file must not stop a million-record source
                reason = f"unexpected {type(exc).__name__}"
            else:
                reason = ""
            if reason:
                where = item if isinstance(item, str) else json.dumps(item, default=str)[:200]
                bad.write(json.dumps({"source": spec.name, "item": where, "reason": reason}) + "\n")
                summary.bad_files += 1
                continue
            for record in records:
                if shard is None or in_shard >= shard_size:
                    if shard is not None:
                        shard.close()
                    name = f"part-{len(summary.shards):05d}.jsonl"
                    summary.shards.append(name)
                    shard, in_shard = (shard_dir / name).open("w", encoding="utf-8"), 0
                shard.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
                in_shard += 1
                for key, counter in counters.items():
                    counter[getattr(record, key)] += 1
            summary.records += len(records)
            _advance(len(records))
    if shard is not None:
        shard.close()
    summary.counts = {k: dict(sorted(c.items())) for k, c in counters.items()}
    summary.config_hash = spec_hash(spec)
    marker = out / "done" / f"{spec.name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(summary), indent=2))
    tmp.replace(marker)  # atomic: a marker exists only for a complete source
    return summary


def finished(spec: SourceSpec, out: Path) -> SourceSummary | None:
    marker = out / "done" / f"{spec.name}.json"
    if not marker.is_file():
        return None
    summary = SourceSummary(**json.loads(marker.read_text()))
    return summary if summary.config_hash == spec_hash(spec) else None


def build(config: BuildConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Convert every source not already done; returns the manifest (also written to disk)."""
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, SourceSummary] = {}
    failed: dict[str, str] = {}
    todo = []
    for spec in config.sources:
        done = finished(spec, out)
        if done is None:
            todo.append(spec)
        else:
            summaries[spec.name] = done
    context = multiprocessing.get_context("spawn")  # no forked torch/tokenizer state
    counter = context.Value("q", 0)
    sources_bar = tqdm(
        total=len(config.sources),
        initial=len(summaries),
        desc="sources",
        unit="src",
        disable=not progress,
    )
    records_bar = tqdm(desc="records", unit="rec", disable=not progress)
    if config.workers <= 1:
        _init_worker(counter)
        for spec in todo:
            try:
                summaries[spec.name] = convert_source(spec, out, config.shard_size)
            except Exception as exc:
                failed[spec.name] = f"{type(exc).__name__}: {exc}"
            sources_bar.update()
            records_bar.update(counter.value - records_bar.n)
    else:
        with ProcessPoolExecutor(
            config.workers, mp_context=context, initializer=_init_worker, initargs=(counter,)
        ) as pool:
            futures: dict[Future, SourceSpec] = {
                pool.submit(convert_source, spec, out, config.shard_size): spec for spec in todo
            }
            pending = set(futures)
            while pending:
                ready, pending = wait(pending, timeout=0.5)
                records_bar.update(counter.value - records_bar.n)
                for future in ready:
                    spec = futures[future]
                    try:
                        summaries[spec.name] = future.result()
                    except Exception as exc:
                        failed[spec.name] = f"{type(exc).__name__}: {exc}"
                    sources_bar.update()
    sources_bar.close()
    records_bar.close()
    return write_outputs(config, out, summaries, failed)


def write_outputs(
    config: BuildConfig, out: Path, summaries: dict[str, SourceSummary], failed: dict[str, str]
) -> dict[str, Any]:
    totals = {k: Counter() for k in ("task", "question_type", "modality", "lang")}
    for summary in summaries.values():
        for key, counts in summary.counts.items():
            totals[key].update(counts)
    with (out / "bad_files.jsonl").open("w", encoding="utf-8") as bad:
        for name in sorted(summaries):
            bad.write((out / "shards" / name / "bad_files.jsonl").read_text(encoding="utf-8"))
    manifest = {
        "version": MANIFEST_VERSION,
        "records": sum(s.records for s in summaries.values()),
        "bad_files": sum(s.bad_files for s in summaries.values()),
        "sources": {
            name: {"records": s.records, "bad_files": s.bad_files, **s.counts}
            for name, s in sorted(summaries.items())
        },
        **{f"by_{k}": dict(sorted(c.items())) for k, c in totals.items()},
        "failed": failed,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    ratios = {s.name: s.sample_ratio for s in config.sources}
    write_mixture(
        out / "example_list.json",
        {
            name: (Path(s.image_dir), [out / "shards" / name / p for p in s.shards], s.records)
            for name, s in sorted(summaries.items())
        },
        ratios,
    )
    return manifest
