"""Features as the official MelHuBERT computes them, checked against the authors' LibriSpeech statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from melhubert_lib.data.audio import AudioError, load_audio
from melhubert_lib.data.features import FeatureStats, fbank, frames_per_stack, model_input, normalise, stack_frames
from melhubert_lib.data.frames import cached, extract

REFERENCE = Path(os.environ.get("MELHUBERT_REFERENCE_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "melhubert_reference"))
needs_reference = pytest.mark.skipif(not (REFERENCE / "libri-960-mean-std.npy").is_file(),
                                     reason=f"reference data not found at {REFERENCE} (set MELHUBERT_REFERENCE_DIR)")


def test_fbank_uses_25ms_windows_every_10ms():
    wav = np.random.default_rng(0).normal(size=16_000).astype(np.float32) * 0.1
    assert fbank(wav).shape == (1 + (16_000 - 400) // 160, 40)


def test_stacking_pairs_pads_an_odd_frame_count_with_zeros():
    feats = torch.arange(5 * 40, dtype=torch.float32).reshape(5, 40)
    stacked = stack_frames(feats, 2)
    assert stacked.shape == (3, 80)
    torch.testing.assert_close(stacked[1, 40:], feats[3])
    assert torch.all(stacked[2, 40:] == 0)


def test_unknown_frame_rate_names_the_parameter():
    with pytest.raises(ValueError, match="frame_ms"):
        frames_per_stack(30)


@needs_reference
@pytest.mark.parametrize("name, mean, std", [("100-121669-0000", -0.26, 1.0), ("1001-134707-0000", -0.53, 1.5)])
def test_features_match_the_authors_statistics_on_real_librispeech(name, mean, std):
    stats = FeatureStats.load(REFERENCE / "libri-960-mean-std.npy")
    feats = normalise(fbank(load_audio(REFERENCE / f"{name}.flac")), stats)
    assert feats.mean().item() == pytest.approx(mean, abs=0.05)
    assert feats.std().item() == pytest.approx(std, abs=0.05)
    unscaled = normalise(fbank(load_audio(REFERENCE / f"{name}.flac") / 2**15), stats)
    assert unscaled.mean().item() < -5  # without the 2**15 scaling the features are far off


@needs_reference
def test_model_input_is_80_dims_at_20ms():
    stats = FeatureStats.load(REFERENCE / "libri-960-mean-std.npy")
    wav = load_audio(REFERENCE / "100-121669-0000.flac")
    assert model_input(wav, stats, 20).shape == (101, 80)  # 202 fbank frames in pairs
    assert model_input(wav, stats, 10).shape == (202, 40)


def test_statistics_from_frames_equal_numpy():
    rng = np.random.default_rng(0)
    parts = [torch.from_numpy(rng.normal(3, 2, size=(n, 40)).astype(np.float32)) for n in (50, 70)]
    stats = FeatureStats.from_features(parts)
    joined = torch.cat(parts).numpy()
    np.testing.assert_allclose(stats.mean, joined.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, joined.std(0), rtol=1e-4)


def test_wrongly_shaped_statistics_file_is_a_clear_error(tmp_path):
    np.save(tmp_path / "stats.npy", np.zeros((3, 40)))
    with pytest.raises(ValueError, match="stats.npy"):
        FeatureStats.load(tmp_path / "stats.npy")


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: sf.write(p, np.full(800, 0.1, np.float32), 8000, format="FLAC"), "8000 Hz"),
        (lambda p: sf.write(p, np.zeros(1600, np.float32), 16000, format="FLAC"), "silence"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000, format="WAV"), "no samples"),
        (lambda p: Path(p).write_bytes(b"not audio at all"), "not a readable audio file"),
        (lambda p: sf.write(p, np.full((800, 2), 0.1, np.float32), 16000, format="FLAC"), "mono"),
    ],
)
def test_bad_audio_files_give_one_clear_error_naming_the_file(tmp_path, write, message):
    path = tmp_path / "bad.flac"
    write(path)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert "bad.flac" in str(err.value)


def _float_wav(path: Path, bad_value: float | None = None) -> Path:
    wav = np.full(1600, 0.1, np.float32)
    if bad_value is not None:
        wav[100] = bad_value
    sf.write(path, wav, 16000, format="WAV", subtype="FLOAT")
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(tmp_path, value):
    path = _float_wav(tmp_path / "spiky.wav", value)
    with pytest.raises(AudioError, match="NaN or infinite samples") as err:
        load_audio(path)
    assert "spiky.wav" in str(err.value)


def _split(tmp_path: Path) -> list[Path]:
    """Five files: two usable, three whose headers are bad (8 kHz, stereo, not audio)."""
    good = [_float_wav(tmp_path / f"good{i}.wav") for i in range(2)]
    sf.write(tmp_path / "rate.flac", np.full(800, 0.1, np.float32), 8000, format="FLAC")
    sf.write(tmp_path / "stereo.flac", np.full((800, 2), 0.1, np.float32), 16000, format="FLAC")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + b"x" * 100)
    return [good[0], tmp_path / "rate.flac", tmp_path / "stereo.flac", good[1], tmp_path / "corrupt.flac"]


def test_a_split_reports_every_bad_header_at_once_before_any_feature_work(tmp_path):
    paths = _split(tmp_path)
    featurised = []

    def featurize(wav):
        featurised.append(wav)
        return fbank(wav)

    with pytest.raises(AudioError, match="3 of 5 audio files") as err:
        extract(paths, [p.stem for p in paths], featurize)
    for name in ("rate.flac", "stereo.flac", "corrupt.flac"):
        assert name in str(err.value)
    assert "good" not in str(err.value) and featurised == []


def test_every_file_with_non_finite_samples_is_named_and_nothing_is_cached(tmp_path):
    paths = [_float_wav(tmp_path / "a.wav"), _float_wav(tmp_path / "nan.wav", np.nan),
             _float_wav(tmp_path / "b.wav"), _float_wav(tmp_path / "inf.wav", np.inf)]
    cache = tmp_path / "cache"
    with pytest.raises(AudioError, match="2 of 4 audio files") as err:
        cached(cache / "fbank-split.npz", lambda: extract(paths, [p.stem for p in paths], fbank))
    assert "nan.wav" in str(err.value) and "inf.wav" in str(err.value)
    assert not cache.exists() or list(cache.iterdir()) == []
