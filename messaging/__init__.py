"""Whereabouts message pipeline: outbox, rendering and providers (built in later steps)."""
