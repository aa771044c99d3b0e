"""Three-stage progressive training on the Hugging Face Trainer.

- `config`   stage and run configuration (plain dataclasses; YAML/JSON overrides)
- `dataset`  LLaVA JSON / mixture files -> (image, messages) examples
- `collator` chat template, image-token expansion, assistant-only labels, padding
- `stages`   which modules train in a stage, one Trainer run per stage, resume
- `export`   Hugging Face LLaVA checkpoint in the layout vLLM loads (LoRA merged)
- `plot`     loss curves as PNG
- `pretrain` the demo's component pretraining (LM on text, vision encoder CLIP-style)
- `heldout`  greedy answers on a held-out split, accuracy per question type
- `demo`     runs the demo recipe (training/demo_recipe.py): corpus -> pretraining ->
             stages I-III -> export -> scores

`config` is torch-free (the CLI validates configs before loading a model).
"""
