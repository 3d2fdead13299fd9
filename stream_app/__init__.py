"""Serving: the Faust worker (docs/architecture.md has the module map)."""
