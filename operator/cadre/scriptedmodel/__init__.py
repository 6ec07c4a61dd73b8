"""A stand-in for the Anthropic Messages API, driven by scenario files, for tests and the demo.

Never imported by production code (an import-linter contract says so)."""
