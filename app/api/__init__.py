"""The merchant REST API under /api/v1."""
