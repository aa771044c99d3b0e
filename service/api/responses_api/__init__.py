"""The OpenAI Responses API (`/v1/responses`): protocol, input, bodies, serving, routes."""
