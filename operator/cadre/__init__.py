"""Cadre: a Kubernetes operator that runs AI agents as an organization."""

__version__ = "0.1.0"
