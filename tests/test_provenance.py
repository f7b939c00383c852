"""Fingerprints of what produced a cached artefact: code versions, recipes, the parts that differ."""

from __future__ import annotations

import importlib
import sys

from melhubert_lib.data import provenance
from melhubert_lib.data.provenance import code_version, differing_parts, fingerprint, plain
from melhubert_lib.scales import PretrainScale


def test_code_version_follows_the_source_of_the_named_modules(tmp_path, monkeypatch):
    module = tmp_path / "stage_under_test.py"
    module.write_text("STEP = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("stage_under_test")
    before = code_version("stage_under_test")
    assert code_version(sys.modules["stage_under_test"]) == before  # a module or its name
    module.write_text("STEP = 2\n")
    provenance._source_hash.cache_clear()  # one process reads a source once; this test edits it
    assert code_version("stage_under_test") != before
    assert code_version("stage_under_test", "melhubert_lib.data.frames") != code_version("stage_under_test")


def test_fingerprints_and_differing_parts_see_nested_recipe_changes():
    sched = PretrainScale(steps=10, lr=1e-3, batch_seconds=8.0, crop_seconds=2.0)
    other = PretrainScale(steps=10, lr=2e-3, batch_seconds=8.0, crop_seconds=2.0)
    assert fingerprint({"finetune": sched}) == fingerprint({"finetune": plain(sched)})  # as stored in JSON
    assert fingerprint({"finetune": sched}) != fingerprint({"finetune": other})
    stored = plain({"finetune": sched, "setting": 0.3, "start": "a"})
    assert differing_parts(stored, {"finetune": other, "setting": 0.3, "start": "a"}) == ["finetune"]
    assert differing_parts(stored, {"finetune": sched, "setting": 0.3}) == ["start"]


def test_a_frame_stores_hash_follows_its_frames_boundaries_and_ids():
    import numpy as np

    from melhubert_lib.data.frames import FrameStore

    def store(data, ids=("a", "b")):
        return FrameStore.from_arrays([np.asarray(d, np.float32) for d in data], list(ids))

    base = store([[[1.0], [2.0]], [[3.0]]])
    assert base.content_hash() == store([[[1.0], [2.0]], [[3.0]]]).content_hash()
    others = [store([[[1.0], [2.0]], [[4.0]]]), store([[[1.0]], [[2.0], [3.0]]]), store([[[1.0], [2.0]], [[3.0]]],
                                                                                          ("a", "c"))]
    assert len({base.content_hash(), *(o.content_hash() for o in others)}) == 4
