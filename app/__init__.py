"""Whereabouts: the web service (settings, API, storage, domain)."""

__version__ = "0.1.0"
