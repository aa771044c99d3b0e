"""Evaluation on medical VQA benchmarks against any OpenAI-compatible endpoint.

Talks to the model over HTTP like any client (never through `service`), so the
same command measures a local `gmai-vl serve`, a deployed gateway or another
vendor's endpoint.
"""
