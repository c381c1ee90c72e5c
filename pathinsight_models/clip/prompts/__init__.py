"""Shipped zero-shot prompt sets (YAML); a package so the files install with it."""
