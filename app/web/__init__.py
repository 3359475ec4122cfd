"""The shopper-facing web: tracking pages, lookup, live updates."""
