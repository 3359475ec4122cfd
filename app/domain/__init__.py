"""Pure domain logic: plain functions on plain data, no I/O."""
