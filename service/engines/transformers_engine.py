"""The reference engine: a Hugging Face LLaVA checkpoint run by transformers (CPU or GPU).

Generation is our own short decode loop rather than `model.generate`, for three
reasons: each request gets its own `torch.Generator` (a `seed` reproduces an
answer even while other requests run), abort is checked between tokens (a
cancelled request frees its slot within one token), and tokens stream without
a streamer thread per request. Each request runs in a thread of a pool sized
`max_concurrency`, off the event loop; tokens cross to the loop with
`call_soon_threadsafe`.

LoRA adapters (`adapters`: model id -> PEFT directory) are loaded over the one
base model with PEFT; each request names its adapter (`request.model`). The
active adapter is PEFT's model-wide state (and its per-call `adapter_names`
cannot route a trained projector, `modules_to_save`), so with adapters one
forward pass runs at a time, choosing its adapter under a lock: requests for
different adapters and the base still interleave token by token.

torch is imported lazily so that importing `service` never pulls it in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service import errors
from service.core.generation import (
    Delta,
    Finish,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Logprob,
    SamplingParams,
    TokenLogprobs,
    Usage,
)
from service.engines.base import refuse_structured_output
from service.engines.detokenize import IncrementalDetokenizer, TokenBytes

log = logging.getLogger("gmaivl.engine")

_DONE = object()


class TransformersEngine:
    name = "transformers"

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        max_concurrency: int = 2,
        adapters: dict[str, Path] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.adapters = dict(adapters or {})
        self.device = device
        self.max_concurrency = max_concurrency
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="gmaivl-gen")
        self._aborts: dict[str, threading.Event] = {}
        self._forward_lock = threading.Lock()
        self._ready = False
        self.model: Any = None
        self.processor: Any = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)
        self._ready = True

    def _load(self) -> None:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(self.model_dir)
            # The checkpoint's own dtype (bf16 as imported stays bf16), loaded straight
            # onto an accelerator rather than through host memory first.
            self.model = LlavaForConditionalGeneration.from_pretrained(
                self.model_dir,
                dtype="auto",
                device_map=None if self.device == "cpu" else self.device,
            )
        except (OSError, ValueError) as exc:
            raise errors.NotReady(f"Cannot load the checkpoint at {self.model_dir}.") from exc
        if self.adapters:
            self.model = self._with_adapters(self.model)
        self.model.to(self.device).eval()
        if self.processor.chat_template is None:
            raise errors.NotReady("The checkpoint has no chat template.")
        text_config = self.model.config.text_config
        self.max_model_len = text_config.max_position_embeddings
        self._token_bytes = TokenBytes(self.processor.tokenizer)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        torch.set_grad_enabled(False)

    def _with_adapters(self, model: Any) -> Any:
        from peft import PeftModel

        wrapped = None
        for name, directory in self.adapters.items():
            try:
                if wrapped is None:
                    wrapped = PeftModel.from_pretrained(model, directory, adapter_name=name)
                else:
                    wrapped.load_adapter(directory, adapter_name=name)
            except (OSError, ValueError) as exc:
                raise errors.NotReady(f"Cannot load the LoRA adapter {name!r}.") from exc
        return wrapped

    def ready(self) -> bool:
        return self._ready

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if not self._ready:
            raise errors.NotReady("The model is still loading.")
        refuse_structured_output(request, self.name)
        inputs = await asyncio.to_thread(self._encode, request)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        params = request.sampling
        if prompt_tokens + params.max_tokens > self.max_model_len:
            raise errors.InvalidRequest(
                f"The prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_tokens}) "
                f"exceeds the model's context of {self.max_model_len} tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[Any] = asyncio.Queue()
        abort = self._aborts.setdefault(request.request_id, threading.Event())

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(tokens.put_nowait, item)

        adapter = request.model if request.model in self.adapters else None
        future = loop.run_in_executor(
            self._pool, self._decode_loop, inputs, params, abort, emit, adapter
        )
        detok = IncrementalDetokenizer(self.processor.tokenizer, params.stop)
        completion_tokens = 0
        reason: FinishReason = "length"
        # Log probabilities of tokens whose text is still held back: they leave with
        # the next delta, or with the last one.
        pending: list[TokenLogprobs] = []
        tail = ""
        try:
            while True:
                item = await tokens.get()
                if item is _DONE:
                    if abort.is_set():
                        return  # aborted from outside: no Finish (engines/base.py)
                    break
                if isinstance(item, BaseException):
                    raise errors.EngineError("Generation failed.") from item
                if isinstance(item, tuple):  # (token, its logprobs) when the request asked
                    item, token_logprobs = item
                else:
                    token_logprobs = None
                completion_tokens += 1
                if item in self.eos_ids:
                    reason = "stop"
                    break
                if token_logprobs is not None:
                    pending.append(self._token_logprobs(item, *token_logprobs))
                text = detok.add(item)
                if detok.stopped:
                    abort.set()
                    reason = "stop"
                    tail = text  # the text before the stop string
                    break
                if text:
                    yield Delta(text, tuple(pending))
                    pending.clear()
            if not detok.stopped:
                tail = detok.flush()
            if tail or pending:
                yield Delta(tail, tuple(pending))
            yield Finish(reason, Usage(prompt_tokens, completion_tokens))
        finally:
            abort.set()  # also on cancellation: the decode loop stops at the next token
            try:
                if not future.done():
                    await asyncio.shield(future)  # the pool slot is free when we return
            finally:
                self._aborts.pop(request.request_id, None)

    def _token_logprobs(
        self, token: int, logprob: float, top: list[tuple[int, float]]
    ) -> TokenLogprobs:
        return TokenLogprobs(
            self._logprob(token, logprob), tuple(self._logprob(t, lp) for t, lp in top)
        )

    def _logprob(self, token: int, logprob: float) -> Logprob:
        text, raw = self._token_bytes(token)
        return Logprob.of(text, logprob, raw)

    def _encode(self, request: GenerationRequest) -> dict[str, Any]:
        prompt = self.processor.apply_chat_template(request.messages, add_generation_prompt=True)
        images = [image.to_pil() for image in request.images] or None
        inputs = self.processor(images=images, text=prompt, return_tensors="pt")
        # Pixels come out of the processor in float32: into the model's dtype (bf16 on
        # a GPU), ids and masks as they are, all on the model's device.
        dtype = self.model.dtype
        return {
            k: v.to(self.device, dtype if v.is_floating_point() else None)
            for k, v in inputs.items()
        }

    def _forward(self, adapter: str | None, **kwargs: Any) -> Any:
        """One forward pass with `adapter` (None: the base) active."""
        if not self.adapters:
            return self.model(**kwargs)
        with self._forward_lock:
            if adapter is None:
                with self.model.disable_adapter():
                    return self.model(**kwargs)
            self.model.set_adapter(adapter)
            return self.model(**kwargs)

    def _decode_loop(
        self,
        inputs: dict[str, Any],
        params: SamplingParams,
        abort: threading.Event,
        emit: Any,
        adapter: str | None = None,
    ) -> None:
        """Runs in a pool thread: prefill, then one token per step until done or aborted."""
        import torch

        try:
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device=self.device).manual_seed(params.seed)
            with torch.inference_mode():
                out = self._forward(adapter, **inputs, use_cache=True)
                for _ in range(params.max_tokens):
                    if abort.is_set():
                        break
                    logits = out.logits[0, -1]
                    token = sample_token(logits, params, generator)
                    if params.logprobs is None:
                        emit(token)
                    else:
                        emit((token, token_logprobs(logits, token, params.logprobs)))
                    if token in self.eos_ids:
                        break
                    out = self._forward(
                        adapter,
                        input_ids=torch.tensor([[token]], device=self.device),
                        past_key_values=out.past_key_values,
                        use_cache=True,
                    )
        except Exception as exc:
            emit(exc)
        emit(_DONE)

    async def abort(self, request_id: str) -> None:
        event = self._aborts.get(request_id)
        if event is not None:
            event.set()

    async def stop(self) -> None:
        for event in self._aborts.values():
            event.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._ready = False

    def collectors(self) -> list[Any]:
        return []


def token_logprobs(logits: Any, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's log probability and the k most likely (id, log probability),
    from the raw logits (before temperature and top_p), as vLLM reports them."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(logprobs, k) if k else None
    pairs = [] if top is None else list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
    return float(logprobs[token]), pairs


# Below this a temperature is greedy, as in vLLM: dividing logits by 1e-300 gives
# inf, softmax NaN, and torch.multinomial an error (a 500 for a valid request).
GREEDY_BELOW = 1e-5


def sample_token(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Greedy at temperature 0 (or below GREEDY_BELOW); otherwise temperature, then
    nucleus (top_p) sampling."""
    import torch

    if params.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
