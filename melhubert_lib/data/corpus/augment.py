"""Signal processing that makes formant speech less clean: channel colouring, noise, reverberation, gain.

All functions take and return float32 mono audio at `melhubert_lib.data.audio.SAMPLE_RATE` and draw
randomness only from the generator they are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft
from scipy.signal import fftconvolve

from ..audio import SAMPLE_RATE
from .speakers import ChannelColour

# Noise colours: exponent of the power spectrum (power ~ f**exponent); "hum" is mains hum over pink noise.
NOISE_EXPONENTS = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}
NOISE_COLOURS = (*NOISE_EXPONENTS, "hum")

SNR_RANGE_DB = (5.0, 30.0)
REVERB_PROBABILITY = 0.7
RT60_RANGE_S = (0.15, 0.8)
DIRECT_TO_REVERB_DB = (-3.0, 12.0)
LEVEL_RANGE_DBFS = (-32.0, -16.0)  # RMS level of the active speech
PEAK_LIMIT = 0.98
_CHANNEL_BAND_EDGES_HZ = (100.0, 7000.0)
_FILTER_PADDING = 2048  # zeros appended before FFT filtering, so the filter does not wrap around


@dataclass(frozen=True)
class Conditions:
    """Recording conditions of one utterance."""

    noise_colour: str
    snr_db: float
    rt60_s: float | None  # None: no reverberation
    direct_to_reverb_db: float
    level_dbfs: float


def draw_conditions(rng: np.random.Generator) -> Conditions:
    """Draw random recording conditions for one utterance."""
    reverberant = rng.random() < REVERB_PROBABILITY
    return Conditions(
        noise_colour=NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))],
        snr_db=float(rng.uniform(*SNR_RANGE_DB)),
        rt60_s=float(rng.uniform(*RT60_RANGE_S)) if reverberant else None,
        direct_to_reverb_db=float(rng.uniform(*DIRECT_TO_REVERB_DB)),
        level_dbfs=float(rng.uniform(*LEVEL_RANGE_DBFS)),
    )


def apply_channel(wav: np.ndarray, channel: ChannelColour, jitter_db: np.ndarray | None = None) -> np.ndarray:
    """Filter `wav` (zero phase, via the FFT) with the channel's band limits and equaliser.

    `jitter_db` (one value per band) is added to the equaliser gains, for per-utterance variation.
    """
    n = len(wav)
    n_fft = fft.next_fast_len(n + _FILTER_PADDING, real=True)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    gains_db = np.asarray(channel.band_gains_db) + (0.0 if jitter_db is None else jitter_db)
    centres = np.geomspace(*_CHANNEL_BAND_EDGES_HZ, len(gains_db))
    log_f = np.log(np.maximum(freqs, 1.0))
    response = 10.0 ** (np.interp(log_f, np.log(centres), gains_db) / 20.0)
    with np.errstate(divide="ignore"):
        highpass = 1.0 / np.sqrt(1.0 + (channel.lowcut_hz / np.maximum(freqs, 1e-3)) ** 4)
    lowpass = 1.0 / np.sqrt(1.0 + (freqs / channel.highcut_hz) ** 8)
    spectrum = fft.rfft(wav, n_fft) * response * highpass * lowpass
    return fft.irfft(spectrum, n_fft)[:n].astype(np.float32)


def coloured_noise(n_samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of the named colour (see NOISE_COLOURS)."""
    if colour == "hum":
        t = np.arange(n_samples) / SAMPLE_RATE
        mains = 50.0 if rng.random() < 0.5 else 60.0
        amplitudes = rng.uniform(0.2, 1.0, 6) / np.arange(1, 7)
        phases = rng.uniform(0, 2 * np.pi, 6)
        noise = sum(
            a * np.sin(2 * np.pi * mains * k * t + p)
            for k, a, p in zip(range(1, 7), amplitudes, phases, strict=True)
        )
        noise = noise / _rms(noise) + 0.3 * coloured_noise(n_samples, "pink", rng)
    else:
        n_fft = fft.next_fast_len(n_samples, real=True)
        freqs = np.maximum(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE), 20.0)
        shaped = fft.rfft(rng.standard_normal(n_fft)) * freqs ** (NOISE_EXPONENTS[colour] / 2.0)
        noise = fft.irfft(shaped, n_fft)[:n_samples]
    return (noise / _rms(noise)).astype(np.float32)


def reverberate(
    wav: np.ndarray, rt60_s: float, direct_to_reverb_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Convolve with a synthetic room response (direct path + exponentially decaying noise tail).

    The output has the input's length (the tail past the end is cut) and its RMS level.
    """
    length = max(int(rt60_s * SAMPLE_RATE), 2)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60_s)  # -60 dB at rt60
    tail[0] = 0.0
    tail *= 10.0 ** (-direct_to_reverb_db / 20.0) / max(float(np.sqrt(np.sum(tail**2))), 1e-12)
    tail[0] = 1.0
    out = fftconvolve(wav, tail)[: len(wav)]
    return (out * _rms(wav) / max(_rms(out), 1e-12)).astype(np.float32)


def add_noise(
    wav: np.ndarray, active: slice, colour: str, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Add noise of `colour` at `snr_db` relative to the power of `wav[active]` (the speech)."""
    noise = coloured_noise(len(wav), colour, rng)
    scale = _rms(wav[active]) * 10.0 ** (-snr_db / 20.0)
    return (wav + scale * noise).astype(np.float32)


def set_level(wav: np.ndarray, active: slice, level_dbfs: float) -> np.ndarray:
    """Scale so that `wav[active]` has RMS `level_dbfs`, then lower it if needed to keep the peak in range."""
    gain = 10.0 ** (level_dbfs / 20.0) / max(_rms(wav[active]), 1e-12)
    peak = float(np.abs(wav).max()) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (wav * gain).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
