"""What produced a cached artefact: fingerprints of its inputs, its recipe and the code that computes it.

Every cache of the suite (frames, layer features, targets, downstream rows, speed figures) is found under a
name that includes such a fingerprint, and every resumable stage (a training run, a compression level) stores
the parts it was started from and refuses to continue with others. So a change of the corpus, of a recipe
setting or of the code that computes a stage makes the stage compute again instead of reusing a stale result;
`make clean-work` removes what is left behind.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from types import ModuleType


def code_version(*modules: ModuleType | str) -> str:
    """A short hash of the source files of `modules` (modules or module names: the code that computes an artefact)."""
    digest = hashlib.sha256()
    for name in sorted(m if isinstance(m, str) else m.__name__ for m in modules):
        digest.update(name.encode() + b"\0" + _source_hash(name).encode())
    return digest.hexdigest()[:12]


@functools.cache
def _source_hash(module_name: str) -> str:
    import importlib

    path = Path(importlib.import_module(module_name).__file__)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(*parts: object) -> str:
    """A short hash of JSON-serialisable parts (dataclasses are taken field by field)."""
    text = json.dumps([plain(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differing_parts(stored: dict, wanted: dict) -> list[str]:
    """The keys whose values differ between two provenance records (for an error that says which)."""
    return sorted(k for k in stored.keys() | wanted.keys() if plain(stored.get(k)) != plain(wanted.get(k)))


def plain(value: object) -> object:
    """`value` as plain JSON data, as it is stored: dataclasses field by field (nested too), other objects by str."""
    return json.loads(json.dumps(value, sort_keys=True, default=_to_json))


def _to_json(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)
