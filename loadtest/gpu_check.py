"""First contact with a GPU: a 7B-shaped GMAI-VL imported and served on CUDA in bf16,
measured through the gateway (issue 28). One script, one `device` call (docs/benchmarks.md);
`--tiny --device cpu` runs the same code path here (tests/loadtest/test_gpu_check.py).

  1. build   an xtuner-layout source (InternLM2-7B shapes: 32 layers, hidden 4096,
             32 heads / 8 KV heads, intermediate 14336, vocabulary 92544; CLIP-L/14-336
             tower) with random weights made on the device in bf16, saved as xtuner does
  2. import  `gmai-vl model import SRC --out DST --dtype bfloat16`
  3. serve   `gmai-vl serve --engine transformers --device DEV --max-concurrency 32`:
             load time (spawn to /health/ready) and memory (the server process's GPU
             memory from nvidia-smi, else the device's used memory; RSS on CPU)
  4. load    streams of an image prompt through the gateway at 1, 8 and 32 at once:
             TTFT p50/p99, output tokens/s in all and per stream, peak memory
  5. agree   greedy, 1 stream, 16 tokens through the gateway == a direct transformers
             `generate` on the same imported weights (in this process, after the server)

Results go to OUT (`--out`, default `$OUT`) as they come: gpu_check.json and
gpu_check.md are rewritten after every step, so a cut-off run still reports.

Weights are random, but shaped so greedy decoding is decisive (bf16 noise between two
code paths must not flip a token): the embeddings are unit-scale, each block's output
projection (attention `wo`, MLP `w2`) is damped so the last position's hidden state
stays close to its token's embedding, and the output layer maps each token's embedding
direction to one "successor" among the tokenizer's ordinary pieces (never a special,
byte or padding id, so every stream runs its full max_tokens and decodes to text). The
top logit is about 30 and the runner-up far below. Agreement then checks the serving
path: the same prompt (chat template, 576 image tokens, tokenizer: equal prompt token
counts), the same weights, greedy decode and streaming detokenization, rather than
the rounding of two attention kernels (which these weights make too small to decide
a token). The compute per token is that of the real shapes: timings and memory are
what a 7B costs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.bench_vllm import Tally, pct  # noqa: E402
from service.processes import free_port, stop_process, wait_ready  # noqa: E402

MODEL = "gmai-vl-7b-check"
QUESTION = "Describe the findings in this image."
AGREE_TOKENS = 16
SHARD_BYTES = 4 << 30  # the LLM's safetensors shards, as save_pretrained writes them
BLOCK_GAIN = 0.02  # RMS each attention / MLP block adds to a unit-RMS residual stream
TOP_LOGIT = 30.0  # the successor's logit; the rest of the vocabulary sits near 0

INTERNLM2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 92544,
    "max_position_embeddings": 32768,
}
TINY_TEXT = {"vocab_size": 506}  # tests' tiny InternLM2: 2 layers, hidden 128, GQA 4/2
TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 336,  # CLIP-L/14-336's 576 image tokens per image, as the 7B has
    "patch_size": 14,
    "projection_dim": 64,
}


@dataclass
class Report:
    """Everything measured, written to OUT after each step (JSON + a markdown table)."""

    out: Path
    data: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.data))
        print(f"[gpu_check] {key}: {json.dumps(value)[:400]}", flush=True)


def markdown(data: dict[str, Any]) -> str:
    env, serve = data.get("environment", {}), data.get("serve", {})
    lines = [
        "# gmai-vl GPU check",
        "",
        f"- device: {env.get('device_name', '?')} ({env.get('device', '?')}), "
        f"torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}, "
        f"Python {env.get('python', '?')}",
        f"- shape: {data.get('shape', '?')}, {data.get('parameters', '?')} parameters",
        f"- build {data.get('build', {}).get('seconds', '?')} s, "
        f"import {data.get('import', {}).get('seconds', '?')} s, "
        f"load (spawn to ready) {serve.get('load_seconds', '?')} s, "
        f"memory after load {serve.get('memory_mib', '?')} MiB ({serve.get('memory_source', '?')})",
        "",
        "| streams | requests | max_tokens | TTFT p50 ms | TTFT p99 ms | output tok/s (all) "
        "| x 1 stream | tok/s per stream p50 | peak memory MiB | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = data.get("levels", [])
    for row in rows:
        # What decoding each request on its own costs: a batching engine's output tok/s
        # grows nearly with the streams at these sizes; this column says how far ours does.
        scale = row["tokens_per_s"] / rows[0]["tokens_per_s"] if rows[0]["tokens_per_s"] else 0
        lines.append(
            f"| {row['streams']} | {row['requests']} | {row['max_tokens']} "
            f"| {row['ttft_p50_ms']:.1f} | {row['ttft_p99_ms']:.1f} | {row['tokens_per_s']:.1f} "
            f"| {scale:.2f} | {row['stream_tokens_per_s_p50']:.1f} | {row['peak_memory_mib']} "
            f"| {row['errors']} |"
        )
    agree = data.get("agreement")
    if agree:
        lines += [
            "",
            f"Greedy agreement over {AGREE_TOKENS} tokens (gateway vs direct `generate`): "
            f"**{verdict(agree)}**",
            *(
                f"- {side}: {agree[side]!r} ({agree['prompt_tokens'][side]} prompt tokens)"
                for side in ("gateway", "generate")
            ),
        ]
    if data.get("error"):
        lines += ["", f"Stopped: {data['error']}"]
    return "\n".join(lines) + "\n"


def verdict(agree: dict[str, Any]) -> str:
    if agree["generate"] is None:
        return "pending (the direct generate runs after the server stops)"
    return "holds" if agree["agree"] else "FAILS"


# ---------------------------------------------------------------------------- build


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device_name": platform.processor() or platform.machine(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env |= {"device_name": props.name, "device_memory_mib": props.total_memory >> 20}
    return env


def text_config(tiny: bool) -> dict[str, Any]:
    from tests.training.model.import_.sources import INTERNLM2

    return {**INTERNLM2, **(TINY_TEXT if tiny else INTERNLM2_7B), "torch_dtype": "bfloat16"}


def vision_config(tiny: bool) -> dict[str, Any]:
    from training.model.import_.sources import CLIP_L_336

    return dict(TINY_VISION if tiny else CLIP_L_336)


@contextmanager
def default_dtype(dtype: Any):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def ordinary_pieces(sp: Any) -> list[int]:
    """Ids of the tokenizer's plain text pieces: no control, unknown, byte or user-defined
    piece (`<|im_start|>`...), so every generated token is text of its own."""
    return [
        i
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
        and not sp.id_to_piece(i).startswith("<")
    ]


def decisive_init(weights: dict[str, Any], config: dict[str, Any], sp: Any, gen: Any) -> None:
    """Rescales `internlm2_weights`' std-0.05 tensors in place (module docstring): unit
    embeddings, fan-in-scaled projections, damped block outputs, a successor output layer."""
    import torch

    base = 0.05
    for key, tensor in weights.items():
        if key.endswith("tok_embeddings.weight"):
            tensor.mul_(1 / base)
        elif key.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
            tensor.mul_(BLOCK_GAIN / (base * math.sqrt(tensor.shape[1])))
        elif key.endswith(("wqkv.weight", "w1.weight", "w3.weight")):
            tensor.mul_(1 / (base * math.sqrt(tensor.shape[1])))
    embeddings = weights["model.tok_embeddings.weight"]
    pieces = sp.get_piece_size()
    allowed = torch.tensor(ordinary_pieces(sp), device=embeddings.device)
    order = torch.randint(0, len(allowed), (pieces,), generator=gen, device=embeddings.device)
    successor = allowed[order]  # every real piece (any prompt's last token) -> a plain piece
    units = embeddings[:pieces].float()
    units = units / units.norm(dim=1, keepdim=True)
    head = torch.zeros(config["vocab_size"], config["hidden_size"], device=embeddings.device)
    head.index_add_(0, successor, units)
    # The final RMSNorm gives the hidden state a norm of sqrt(hidden): logit ~ TOP_LOGIT.
    weights["output.weight"] = (head * (TOP_LOGIT / math.sqrt(config["hidden_size"]))).to(
        embeddings.dtype
    )


def build_source(root: Path, tiny: bool, device: str, seed: int = 0) -> dict[str, Any]:
    """The xtuner layout `gmai-vl model import` reads: LLM (safetensors shards + index)
    and a sentencepiece tokenizer at the root, `visual_encoder/`, `projector/`."""
    import sentencepiece
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from tests.training.model.import_.sources import (
        INTERNLM2_TOKENIZER_CONFIG,
        internlm2_weights,
        save_sharded,
        sentencepiece_model,
        write_json,
        write_xtuner_vision,
    )

    root.mkdir(parents=True, exist_ok=True)
    sp = sentencepiece.SentencePieceProcessor(
        model_file=str(sentencepiece_model(root, dummy_prefix=False))
    )
    config = text_config(tiny)
    write_json(root / "config.json", config)
    write_json(root / "tokenizer_config.json", INTERNLM2_TOKENIZER_CONFIG)
    gen = torch.Generator(device=device).manual_seed(seed)
    weights = internlm2_weights(config, gen=gen, dtype=torch.bfloat16)
    decisive_init(weights, config, sp, gen)
    parameters = sum(t.numel() for t in weights.values())
    total = sum(t.numel() * t.element_size() for t in weights.values())
    save_sharded(weights, root, shards=max(1, math.ceil(total / SHARD_BYTES)))
    del weights
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(torch.bfloat16):
        tower = CLIPVisionModel(CLIPVisionConfig(**vision_config(tiny))).eval()
    parameters += sum(p.numel() for p in tower.parameters())
    write_xtuner_vision(root, tower, config["hidden_size"], gen)
    vision, text = tower.config.hidden_size, config["hidden_size"]
    parameters += vision * text + text * text + 2 * text
    del tower
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"parameters": parameters}


# ---------------------------------------------------------------------------- serve


def gateway_command(args: argparse.Namespace, model_dir: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "service.cli", "serve",
        "--model", str(model_dir), "--served-model-name", MODEL,
        "--engine", "transformers", "--device", args.device,
        "--max-concurrency", str(max(args.streams)),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def memory_mib(device: str, pid: int, baseline: int = 0) -> tuple[int | None, str]:
    """The server's memory: its GPU memory (nvidia-smi), else the device's used memory
    (torch) less `baseline` (what was used before the server started), on CPU its
    resident set."""
    if not device.startswith("cuda"):
        status = Path(f"/proc/{pid}/status")
        for line in status.read_text().splitlines() if status.exists() else ():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10, "server RSS"
        return None, "unavailable"
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run(
            [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        for line in done.stdout.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
                return int(fields[1]), "server process, nvidia-smi"
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return ((total - free) >> 20) - baseline, "device used less before, torch.cuda.mem_get_info"


def device_used_mib(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return (total - free) >> 20


class PeakMemory:
    """Samples memory_mib every 0.2 s in a thread while a load level runs."""

    def __init__(self, device: str, pid: int, baseline: int) -> None:
        self.device, self.pid, self.baseline, self.peak = device, pid, baseline, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value, _ = memory_mib(self.device, self.pid, self.baseline)
            self.peak = max(self.peak, value or 0)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def test_image() -> Any:
    """A 336 x 336 RGB image (the tower's size: the gateway does not resize it)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (336, 336), (30, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 80, 220, 260), fill=(200, 200, 200))
    draw.rectangle((200, 40, 300, 120), fill=(90, 140, 220))
    return image


def chat_body(max_tokens: int, stream: bool) -> dict[str, Any]:
    buffer = io.BytesIO()
    test_image().save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def level(base_url: str, streams: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    """`rounds` waves of `streams` concurrent streamed requests."""
    payload = chat_body(max_tokens, stream=True)
    tally = Tally()
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        began = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(tally.stream(client, payload) for _ in range(streams)))
        elapsed = time.perf_counter() - began
    itl = pct(tally.itls, 50)
    return {
        "streams": streams,
        "requests": len(tally.ttfts),
        "errors": tally.errors,
        "max_tokens": max_tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": tally.generated / elapsed,
        "ttft_p50_ms": pct(tally.ttfts, 50) * 1e3,
        "ttft_p99_ms": pct(tally.ttfts, 99) * 1e3,
        "stream_tokens_per_s_p50": 1 / itl if itl > 0 else 0.0,
    }


def gateway_greedy(base_url: str) -> tuple[str, int]:
    """(the answer, its prompt tokens) through the gateway."""
    r = httpx.post(
        base_url + "/v1/chat/completions", json=chat_body(AGREE_TOKENS, False), timeout=600
    )
    r.raise_for_status()
    answer = r.json()
    return answer["choices"][0]["message"]["content"], answer["usage"]["prompt_tokens"]


def direct_greedy(model_dir: Path, device: str) -> tuple[str, int]:
    """The same prompt through transformers alone (processor, model in the checkpoint's
    dtype on the device, `generate` greedy): (the answer, its prompt tokens)."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype="auto").to(device)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[test_image()], text=prompt, return_tensors="pt")
    inputs = {
        k: v.to(device, model.dtype if v.is_floating_point() else None) for k, v in inputs.items()
    }
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=AGREE_TOKENS, do_sample=False)
    prompt_tokens = inputs["input_ids"].shape[1]
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return processor.tokenizer.decode(out[0, prompt_tokens:], skip_special_tokens=True), int(
        prompt_tokens
    )


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace, report: Report, work: Path) -> None:
    report.put("environment", environment(args.device))
    report.put("shape", "tiny" if args.tiny else "7B (InternLM2-7B + CLIP-L/14-336)")
    began = time.perf_counter()
    built = build_source(work / "source", args.tiny, args.device)
    report.put("parameters", built["parameters"])
    report.put("build", {"seconds": round(time.perf_counter() - began, 1)})

    began = time.perf_counter()
    imported = work / "imported"
    command = [sys.executable, "-m", "service.cli", "model", "import", str(work / "source"),
               "--out", str(imported), "--dtype", "bfloat16", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
    report.put("import", {"seconds": round(time.perf_counter() - began, 1),
                          "said": done.stdout.strip()[-400:]})  # fmt: skip
    shutil.rmtree(work / "source")  # the disk holds one 7B at a time

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = work / "serve.log"
    baseline = device_used_mib(args.device)
    began = time.perf_counter()
    server = subprocess.Popen(
        gateway_command(args, imported, port),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_ready(base_url, timeout=args.ready_timeout, process=server)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; serve log: {log.read_text()[-2000:]}") from exc
        load = round(time.perf_counter() - began, 1)
        memory, source = memory_mib(args.device, server.pid, baseline)
        report.put("serve", {"load_seconds": load, "memory_mib": memory,
                             "memory_source": source})  # fmt: skip
        gateway, gateway_prompt = gateway_greedy(base_url)
        agreement = {"gateway": gateway, "generate": None, "agree": False,
                     "prompt_tokens": {"gateway": gateway_prompt, "generate": None}}  # fmt: skip
        report.put("agreement", agreement)
        rows: list[dict[str, Any]] = []
        for streams in args.streams:
            rounds = 3 if streams == 1 else 1
            with PeakMemory(args.device, server.pid, baseline) as peak:
                row = asyncio.run(level(base_url, streams, rounds, args.tokens))
            rows.append(row | {"peak_memory_mib": peak.peak})
            report.put("levels", rows)
    finally:
        stop_process(server)
    generate, generate_prompt = direct_greedy(imported, args.device)
    same_prompt = gateway_prompt == generate_prompt  # template, image tokens, tokenizer
    agreement |= {"generate": generate, "agree": same_prompt and gateway == generate != ""}
    agreement["prompt_tokens"]["generate"] = generate_prompt
    report.put("agreement", agreement)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (cuda, cpu)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny shape (dry run)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")))
    parser.add_argument("--work", type=Path, help="checkpoints go here (default: a temp dir)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of a load request")
    parser.add_argument("--ready-timeout", type=float, default=600)
    args = parser.parse_args(argv)
    report = Report(args.out)
    work = args.work or Path(tempfile.mkdtemp(prefix="gmaivl-gpu-check-"))
    try:
        run(args, report, work)
    except Exception as exc:
        report.put("error", f"{type(exc).__name__}: {exc}"[-3000:])
        raise
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if report.data["agreement"]["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
