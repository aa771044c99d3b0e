"""The HTTP API: FastAPI app, OpenAI-compatible routes, health and metrics."""
