"""The production engine: vLLM's in-process async engine (AsyncLLM) inside the worker.

vLLM brings continuous batching and the paged KV cache; this module only
translates: our chat (with the checkpoint's own chat template) and normalized
images in, text deltas and usage out, `abort` through to the engine. The
engine core runs in vLLM's own subprocess, so the worker's event loop stays free.

Readiness comes only after a real warm-up request with an image succeeded: an
unsupported configuration (on CPU, an attention head size the backend lacks)
passes vLLM's start-up and then kills the engine at the first request.

vllm is imported lazily: `service` must import without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from service import errors, tracing
from service.config import VllmSettings
from service.core.generation import (
    Delta,
    Finish,
    GenerationEvent,
    GenerationRequest,
    ImageInput,
    Logprob,
    SamplingParams,
    TokenLogprobs,
    Usage,
)
from service.engines.checkpoint import processor_chat_template
from service.engines.cpu_kv_cache import check_fits, plan_cpu_kv_cache
from service.engines.detokenize import TokenBytes

log = logging.getLogger("gmaivl.engine")

WARMUP_REQUEST_ID = "gmaivl-warmup"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # max_lora_rank values vLLM accepts


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        model_dir: Path,
        settings: VllmSettings,
        *,
        max_num_seqs: int = 8,
        limit_images_per_prompt: int = 4,
        adapters: dict[str, Path] | None = None,
    ) -> None:
        """`settings` are vLLM's engine arguments under vLLM's names (`GMAIVL_VLLM_*`,
        `--dtype`, ...); max_num_seqs is the worker's concurrency."""
        self.model_dir = Path(model_dir)
        self.settings = settings
        self.max_concurrency = max_num_seqs
        self.limit_images_per_prompt = limit_images_per_prompt
        self.adapters = dict(adapters or {})  # model id -> PEFT directory (vLLM's LoRA)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._eos_ids: set[int] = set()
        self._ready = False

    async def start(self) -> None:
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        o = self.settings
        kv_cache_bytes = o.kv_cache_memory_bytes
        if kv_cache_bytes is None and _on_cpu():
            kv_cache_bytes = self._cpu_kv_cache_bytes()
        args = AsyncEngineArgs(
            model=str(self.model_dir),
            dtype=o.dtype,
            max_model_len=o.max_model_len,
            max_num_seqs=self.max_concurrency,
            tensor_parallel_size=o.tensor_parallel_size,
            gpu_memory_utilization=o.gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_bytes,
            limit_mm_per_prompt={"image": self.limit_images_per_prompt},
            enforce_eager=o.enforce_eager,
            # Compact JSON for response_format: whitespace between tokens is legal JSON,
            # and a weak model can spend its whole budget on it.
            structured_outputs_config=StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            ),
            disable_log_stats=False,  # keeps the vllm:* Prometheus series up to date
            # vLLM's own request spans join our traces (service.tracing); OTLP/HTTP like ours.
            otlp_traces_endpoint=_vllm_traces_endpoint(),
            **self._lora_args(),
        )
        # Construction loads the weights and starts the engine core (seconds to minutes).
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        self._tokenizer = self._engine.get_tokenizer()
        self._eos_ids = {self._tokenizer.eos_token_id} - {None}
        self._token_bytes = TokenBytes(self._tokenizer)
        # Ours keep it in the tokenizer too; llava-hf's only beside the processor.
        self._chat_template = getattr(self._tokenizer, "chat_template", None)
        self._chat_template = self._chat_template or processor_chat_template(self.model_dir)
        if self._chat_template is None:
            raise errors.NotReady("The checkpoint has no chat template.")
        await self._warm_up()
        self._ready = True

    def _cpu_kv_cache_bytes(self) -> int:
        """On CPU, a cache sized for max_concurrency x max_model_len rather than vLLM's
        90% of the node (engines/cpu_kv_cache.py); NotReady when it cannot fit."""
        plan = plan_cpu_kv_cache(
            self.model_dir, self.settings.max_model_len, self.max_concurrency, self.settings.dtype
        )
        available = _cpu_memory_available()
        check_fits(plan, available)
        log.info(
            "vllm on CPU: KV cache %.0f MiB for %d sequence(s) x %d tokens "
            "(%d bytes per token; %.0f MiB free on the memory node)",
            plan.bytes / 2**20,
            plan.sequences,
            plan.max_model_len,
            plan.bytes_per_token,
            available / 2**20,
        )
        return plan.bytes

    def _lora_args(self) -> dict[str, Any]:
        """vLLM's LoRA: every adapter may be active at once, rank rounded up to what
        vLLM supports."""
        if not self.adapters:
            return {}
        ranks = []
        for directory in self.adapters.values():
            try:
                ranks.append(int(json.loads((directory / "adapter_config.json").read_text())["r"]))
            except (OSError, ValueError, KeyError) as exc:
                raise errors.NotReady(
                    "A LoRA adapter has no readable adapter_config.json."
                ) from exc
        rank = next((r for r in LORA_RANKS if r >= max(ranks)), LORA_RANKS[-1])
        return {"enable_lora": True, "max_loras": len(self.adapters), "max_lora_rank": rank}

    def _lora_request(self, model: str | None) -> Any:
        if model not in self.adapters:
            return None
        from vllm.lora.request import LoRARequest

        index = list(self.adapters).index(model)
        return LoRARequest(model, index + 1, str(self.adapters[model]))

    async def _warm_up(self) -> None:
        image = ImageInput(32, 32, bytes(32 * 32 * 3))
        request = GenerationRequest(
            WARMUP_REQUEST_ID,
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "ok"}]}],
            SamplingParams(max_tokens=2, temperature=0),
            [image],
        )
        async for _ in self._generate(request):
            pass
        log.info("vllm warm-up with an image succeeded")

    def ready(self) -> bool:
        return self._ready

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if not self._ready:
            raise errors.NotReady("The model is still loading.")
        async for event in self._generate(request):
            yield event

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        from vllm.exceptions import VLLMValidationError

        stream = self._engine.generate(
            self.prompt_inputs(request),
            vllm_sampling(request.sampling),
            request.request_id,
            trace_headers=request.trace_headers,
            lora_request=self._lora_request(request.model),
        )
        completion_tokens = 0
        try:
            k = request.sampling.logprobs
            async for output in stream:
                completion = output.outputs[0]
                completion_tokens += len(completion.token_ids)
                logprobs = () if k is None else self._logprobs(completion, k)
                if completion.text or logprobs:
                    yield Delta(completion.text, logprobs)
                if output.finished:
                    if completion.finish_reason not in ("stop", "length"):
                        return  # aborted: no Finish (engines/base.py)
                    prompt_tokens = len(output.prompt_token_ids or ())
                    yield Finish(completion.finish_reason, Usage(prompt_tokens, completion_tokens))
                    return
        except VLLMValidationError as exc:
            # vLLM's message may quote the request; ours never does.
            raise errors.InvalidRequest(
                "The prompt (text plus image tokens) does not fit the model's context.",
                param="messages",
                code="context_length_exceeded",
            ) from exc
        except (ValueError, TypeError) as exc:
            raise errors.InvalidRequest(
                "The request cannot be run by this model.", code="invalid_request"
            ) from exc

    def _logprobs(self, completion: Any, k: int) -> tuple[TokenLogprobs, ...]:
        """vLLM's per-position {token id: Logprob(logprob, rank, decoded_token)} (the
        sampled token and the k best) as ours; the end-of-sequence token is left out,
        as its text is (the reference engine does the same)."""
        out = []
        for token_id, position in zip(
            completion.token_ids, completion.logprobs or (), strict=False
        ):
            if token_id in self._eos_ids or not position:
                continue
            chosen = position.get(token_id)
            top = sorted(
                ((t, lp) for t, lp in position.items() if lp.rank is not None and lp.rank <= k),
                key=lambda item: item[1].rank,
            )
            out.append(
                TokenLogprobs(
                    self._logprob(token_id, chosen),
                    tuple(self._logprob(t, lp) for t, lp in top),
                )
            )
        return tuple(out)

    def _logprob(self, token_id: int, value: Any) -> Logprob:
        # Our text and bytes for the token (as the reference engine's), not vLLM's
        # decoded_token: the same token reads the same whichever engine served it.
        text, raw = self._token_bytes(token_id)
        return Logprob.of(text, value.logprob if value is not None else float("-inf"), raw)

    def prompt_inputs(self, request: GenerationRequest) -> dict[str, Any]:
        """The checkpoint's chat template over our messages (one `<image>` per image part;
        vLLM's processor expands each to the model's image tokens), and the images."""
        prompt = self._tokenizer.apply_chat_template(
            request.messages,
            chat_template=self._chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        inputs: dict[str, Any] = {"prompt": prompt}
        if request.images:
            inputs["multi_modal_data"] = {"image": [image.to_pil() for image in request.images]}
        return inputs

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def stop(self) -> None:
        self._ready = False
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def collectors(self) -> list[Any]:
        """vLLM's own `vllm:*` series (on prometheus_client's global registry)."""
        return [VllmMetricsCollector()]


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _cpu_memory_available() -> int:
    """Free memory of the NUMA node vLLM's CPU worker will allocate on (as it counts it)."""
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

    cpus = get_allowed_cpu_list()
    return int(get_memory_node_info(cpus[0].numa_node if cpus else 0).available_memory)


def vllm_sampling(params: SamplingParams) -> Any:
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    from vllm.sampling_params import SamplingParams as VllmSamplingParams

    structured = None
    if params.response_format is not None:
        kind = params.response_format["type"]
        if kind == "json_schema":
            structured = StructuredOutputsParams(
                json=params.response_format["json_schema"]["schema"]
            )
        elif kind == "json_object":
            structured = StructuredOutputsParams(json_object=True)
    return VllmSamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        stop=list(params.stop) or None,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=structured,
        logprobs=params.logprobs,
    )


class VllmMetricsCollector:
    """Re-exports the `vllm:*` families of the global registry on a worker's registry."""

    def collect(self) -> Any:
        from prometheus_client import REGISTRY

        for family in REGISTRY.collect():
            if family.name.startswith("vllm:"):
                yield family


def _vllm_traces_endpoint() -> str | None:
    """Where vLLM sends its spans: ours when tracing is on (over HTTP, as ours)."""
    url = tracing.otlp_traces_url() if tracing.enabled() else None
    if url is not None:
        os.environ.setdefault("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    return url
