"""The HTTP API (FastAPI): native /v1 routes and the seed-compatible endpoints."""
