"""Themes: built-in theme registry, brand CSS sanitizing and colour contrast checks."""
