"""Fixtures shared with the harness's tests: the scripted model on the test's event loop."""

from tests.harness.conftest import scripted

__all__ = ["scripted"]
