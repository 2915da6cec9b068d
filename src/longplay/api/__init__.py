"""The HTTP API under /v1, with OpenAPI documentation at /docs."""
