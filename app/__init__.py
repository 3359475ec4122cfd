"""Whereabouts: the web service (settings, API, storage, domain)."""
