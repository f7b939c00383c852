"""The one error type of the corpus package, and the checks every reader starts with."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class CorpusError(ValueError):
    """A corpus root, split or file that cannot be used; the message names the path and the fix."""


def require_choice(name: str, value: str, choices: Iterable[str], corpus: str) -> None:
    """Raise CorpusError unless `value` is one of `choices` (a reader's subset argument)."""
    choices = list(choices)
    if value not in choices:
        raise CorpusError(f"{name}={value!r} is not a {corpus} {name}; use one of {', '.join(choices)}")


def require_root(root: Path, corpus: str, holds: str, example: str) -> Path:
    """Return `root` as a Path, or raise CorpusError naming it when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(
            f"{root}: {corpus} root not found; pass the folder holding {holds} (e.g. <corpus>/{example}), "
            "or build a synthetic corpus with build_corpus"
        )
    return root
