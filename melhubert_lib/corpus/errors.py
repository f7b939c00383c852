"""The one error type of the corpus package."""

from __future__ import annotations


class CorpusError(ValueError):
    """A corpus root, split or file that cannot be used; the message names the path and the fix."""
