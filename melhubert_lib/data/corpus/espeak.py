"""A ctypes binding to the eSpeak NG library shipped in the `espeakng-loader` wheel.

eSpeak keeps global state in the library itself, and it is not thread-safe: parallel synthesis uses
processes. Synthesis is synchronous; the callback collects the audio (16-bit, 22050 Hz) and the phoneme
events, whose `sample` field is the start of the phoneme in output samples.

eSpeak's waveform generator carries state from one utterance to the next that `espeak_Terminate` does not
reset (the same call gives waveforms hundreds of samples apart depending on what the process synthesised
before). An `ESpeak` is therefore one freshly loaded copy of the library, used for one job and unloaded when its
`with` block ends (about 3 ms a job). Voices with breath noise (the variants Alicia, caleb, f2, f3, f5 and victor
among the corpus's) also draw random numbers, from eSpeak's own generator (reset by the unload) and from the C
library's `rand()` (whose state lives in the process and survives it): `synthesize` seeds both with the caller's
seed before every utterance, so the seed, not the process's history, decides the noise. A job's audio then depends
on the job alone, not on the worker that ran it or the jobs before it, so a corpus is bit-identical for a seed.
"""

from __future__ import annotations

import _ctypes
import ctypes
from dataclasses import dataclass

import espeakng_loader
import numpy as np

from .errors import CorpusError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_LIBC = ctypes.CDLL(None)  # the process's C library (Linux, macOS): eSpeak's breath noise calls its rand()
_LIBC.srand.argtypes = [ctypes.c_uint]
_LIBC.srand.restype = None
_PHONEME_SEPARATOR = ord("^")  # between the mnemonics of a word in TextToPhonemes output (no mnemonic holds it)

RATE_LIMITS = (80, 450)  # words per minute that eSpeak accepts
PITCH_LIMITS = (0, 99)  # pitch and pitch range parameters
SEED_LIMITS = (0, 2**31 - 1)  # the breath noise's seed (eSpeak's generator and the C library's srand)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class PhonemeEvent:
    """An eSpeak phoneme mnemonic (stress marks included) and its start time in seconds."""

    mnemonic: str
    start: float


@dataclass(frozen=True)
class Synthesis:
    """eSpeak's output for one text: float32 audio in [-1, 1] and the phoneme events."""

    wav: np.ndarray
    sample_rate: int
    phonemes: tuple[PhonemeEvent, ...]


class ESpeak:
    """A freshly loaded eSpeak NG library, initialised for synchronous synthesis with phoneme events.

    Use it as a context manager (`with ESpeak() as speaker: ...`): leaving the block unloads the library, so the
    next engine starts from the library's initial state. One engine at a time per process: two would share the
    library's state.
    """

    _open = False  # an engine of this process holds the library

    def __init__(self) -> None:
        if ESpeak._open:
            raise CorpusError("an eSpeak engine is already open in this process: close it (leave its `with` block) "
                              "before opening another, or the two would share the library's state")
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        ESpeak._open = True
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data_path = espeakng_loader.get_data_path()
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if self.sample_rate <= 0:
            self.close()
            raise CorpusError(
                f"eSpeak NG failed to initialise with data at {data_path}; reinstall espeakng-loader"
            )
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _SynthCallback(self._collect)  # kept on self: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._callback)

    def close(self) -> None:
        """Terminate eSpeak and unload the library (its state goes with it)."""
        if self._lib is None:
            return
        self._lib.espeak_Terminate()
        _ctypes.dlclose(self._lib._handle)
        self._lib = None
        ESpeak._open = False

    def __enter__(self) -> ESpeak:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, wav, n_samples: int, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                name = event.id.string.decode("ascii")
                self._events.append(PhonemeEvent(name, event.sample / self.sample_rate))
            index += 1
        return 0

    def set_voice(self, accent: str, variant: str | None = None) -> None:
        """Select `accent+variant` (or the accent alone); raise CorpusError if eSpeak did not load exactly that."""
        wanted = accent if variant is None else f"{accent}+{variant}"
        status = self._lib.espeak_SetVoiceByName(wanted.encode())
        identifier = (self._lib.espeak_GetCurrentVoice().contents.identifier or b"").decode()
        loaded = identifier.rsplit("/", 1)[-1].lower()
        if status != 0 or loaded != wanted.lower():
            raise CorpusError(
                f"eSpeak voice {wanted!r} did not load (status {status}, current voice {identifier!r}); "
                "remove it from ACCENTS/VARIANTS in melhubert_lib/data/corpus/speakers.py"
            )

    def phonemes(self, text: str, accent: str) -> list[str]:
        """eSpeak's phoneme mnemonics for `text` read in `accent`, in order (stress marks kept; pauses as `_`...)."""
        self.set_voice(accent)
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        mnemonics: list[str] = []
        while pointer.value:  # eSpeak advances the pointer clause by clause, to NULL at the end
            clause = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_SEPARATOR << 8)
            mnemonics += [m for word in (clause or b"").decode("ascii").split() for m in word.split(
                chr(_PHONEME_SEPARATOR)) if m]
        return mnemonics

    def synthesize(
        self, text: str, accent: str, variant: str, rate: int, pitch: int, pitch_range: int, *, seed: int
    ) -> Synthesis:
        """Speak `text` with the given voice and prosody (rate in words per minute, pitch 0-99); `seed` (0 to 2**31 - 1)
        seeds the breath noise of the voices that have it, so the same call always gives the same audio."""
        _check_range("seed", seed, SEED_LIMITS)
        _check_range("rate", rate, RATE_LIMITS)
        _check_range("pitch", pitch, PITCH_LIMITS)
        _check_range("pitch_range", pitch_range, PITCH_LIMITS)
        self.set_voice(accent, variant)
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._chunks, self._events = [], []
        self._lib.espeak_ng_SetRandSeed(seed)
        _LIBC.srand(seed)
        encoded = text.encode("utf-8")
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise CorpusError(f"eSpeak failed to speak {text!r} with {accent}+{variant} (status {status})")
        wav = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return Synthesis(wav=wav, sample_rate=self.sample_rate, phonemes=tuple(self._events))


def _check_range(name: str, value: int, limits: tuple[int, int]) -> None:
    if not limits[0] <= value <= limits[1]:
        raise CorpusError(f"eSpeak parameter {name}={value} is outside {limits[0]}..{limits[1]}")
