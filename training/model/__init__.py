"""Model assembly: named presets (`presets`), an offline BPE tokenizer (`tokenizer`),
LLaVA checkpoints on disk (`assemble`). Import the submodules: this package stays
free of torch so that `gmai-vl --help` and the gateway start fast."""
