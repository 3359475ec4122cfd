"""Benchmarks: each prints its own figures against a ceiling measured in the same run."""
