"""Checks in the notebooks: a failed check stops the run with its label, a passed one prints it (nbval compares)."""

from __future__ import annotations


def check(label: str, ok: bool) -> None:
    """Raise an AssertionError naming `label` unless `ok`; otherwise print `ok: <label>`."""
    if not ok:
        raise AssertionError(f"check failed: {label}")
    print(f"ok: {label}")
