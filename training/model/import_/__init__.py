"""`gmai-vl model import`: checkpoints in other LLaVA layouts -> our native layout.

A hospital's GMAI-VL-family model comes as xtuner output, as a remote-code
`enhanced_llava` directory (InternLM2 text model) or in the original LLaVA
layout. The importer rewrites one of those, tensor by tensor and shard by
shard, as a `LlavaForConditionalGeneration` (Llama or Mistral text model, CLIP
tower, two-layer GELU projector) that transformers and vLLM load without
remote code. No code from the source checkpoint is ever run: configs are read
as JSON, tokenizers through `tokenizer.json`, weights as tensors.

    formats.py    what a source directory is (detection, one clear error)
    sources.py    per format: where the LLM, tower, projector and tokenizer are
    tensors.py    weight files in (safetensors, .bin, sharded), shards out
    internlm2.py  InternLM2 -> Llama: config and keys (fused wqkv split)
    keymap.py     per format: source key -> native key(s)
    lora.py       an xtuner `llm_adapter/` merged onto its base LLM
    chat.py       the sources' chat templates (InternLM2 ChatML, LLaVA-1.5, Mistral)
    template_choice.py  the template written: --chat-template, the source's own, or the
                  format's; the tokens it needs checked against the tokenizer
    parts.py      tokenizer, image token, processor
    spm.py        a sentencepiece tokenizer.model converted, checked against sentencepiece
    importer.py   the plan and the run; `import.json` provenance
"""
