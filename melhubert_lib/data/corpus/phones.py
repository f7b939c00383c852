"""The phone set of the corpus and the mapping from eSpeak NG phoneme mnemonics onto it.

Phone set: silence plus the 39 phones of the CMU Pronouncing Dictionary (ARPAbet without stress),
40 classes in all; index 0 is silence.

Mapping. eSpeak reports each phoneme as an ASCII mnemonic (its own "Kirshenbaum-like" names, e.g.
`@` schwa, `aI` PRICE, `t#` flap). Stress marks (`'` primary, `,` secondary) are stripped first.
Each mnemonic maps to a tuple of classes:

* one class: the usual case (`tS` -> ch, `0` -> aa, `t#` (flap) -> t, `?` (glottal stop for /t/) -> t);
* two classes: eSpeak phonemes that ARPAbet writes as two phones: syllabic L `@L` -> ah l, the
  r-coloured and centring diphthongs `A@`, `O@`, `e@`, `i@`, `U@`, `aI@` ... (e.g. en-us `A@` = [ɑːɹ]
  -> aa r, RP `i@` = [iə] -> ih ah). The segment is split evenly between the two;
* no class: `;` (a palatal transition between two vowels). Its time goes to the phone before it;
* silence: the pause phonemes `_`, `_:`, `_!` (a short pause between words) and `_|`.

The same mnemonic is realised differently by different accents (eSpeak's IPA output shows it:
`V` is [ʌ] in en-us but [ʊ] in the Lancastrian en-gb-x-gbclan; `aI` is [ɔɪ] in the West Midlands
en-gb-x-gbcwmd). Labels follow what is heard, so `ACCENT_OVERRIDES` replaces the default mapping
for those accents. The tables cover every mnemonic that the eight English accents of
`speakers.ACCENTS` produce for the text generator's whole vocabulary; any other mnemonic raises.
"""

from __future__ import annotations

from .errors import CorpusError

SILENCE = "sil"

PHONES: tuple[str, ...] = (
    SILENCE,
    "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh",
    "eh", "er", "ey", "f", "g", "hh", "ih", "iy", "jh", "k",
    "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh",
    "t", "th", "uh", "uw", "v", "w", "y", "z", "zh",
)  # fmt: skip

PHONE_INDEX: dict[str, int] = {phone: index for index, phone in enumerate(PHONES)}

_STRESS_MARKS = "',"

DEFAULT_MAPPING: dict[str, tuple[str, ...]] = {
    # pauses and transitions
    "_": (SILENCE,), "_:": (SILENCE,), "_!": (SILENCE,), "_|": (SILENCE,), ";": (),
    # plosives, affricates, fricatives
    "p": ("p",), "b": ("b",), "t": ("t",), "t#": ("t",), "t2": ("t",), "t[": ("t",), "?": ("t",),
    "d": ("d",), "k": ("k",), "g": ("g",), "tS": ("ch",), "dZ": ("jh",),
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "S": ("sh",), "Z": ("zh",), "h": ("hh",),
    # nasals, liquids, glides
    "m": ("m",), "n": ("n",), "n-": ("n",), "N": ("ng",), "l": ("l",), "@L": ("ah", "l"),
    "r": ("r",), "r-": ("r",), "w": ("w",), "w#": ("w",), "j": ("y",),
    # monophthongs
    "0": ("aa",), "A:": ("aa",), "A~": ("aa",), "a": ("ae",), "aa": ("ae",), "a#": ("ah",),
    "@": ("ah",), "@-": ("ah",), "@2": ("ah",), "@5": ("ah",), "3": ("ah",), "3:": ("er",),
    "V": ("ah",), "E": ("eh",), "e": ("ey",), "I": ("ih",), "I#": ("ih",), "I2": ("ih",),
    "i": ("iy",), "i:": ("iy",), "O:": ("ao",), "O2": ("ao",), "U": ("uh",), "u:": ("uw",),
    # diphthongs and r-coloured / centring vowels
    "aI": ("ay",), "aI2": ("ay",), "aI3": ("ay", "er"), "aI@": ("ay", "ah"), "aU": ("aw",),
    "eI": ("ey",), "oU": ("ow",), "OI": ("oy",),
    "A@": ("aa",), "O@": ("ao",), "o@": ("ao",), "e@": ("eh", "ah"), "i@": ("ih", "ah"),
    "i@3": ("ih", "ah"), "U@": ("uh", "ah"), "IR": ("ah", "r"), "VR": ("ah", "r"),
}  # fmt: skip

ACCENT_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    # rhotic General American: r-coloured vowels keep their r
    "en-us": {
        "3": ("er",), "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"), "e@": ("eh", "r"),
        "i@3": ("ih", "r"), "U@": ("uh", "r"),
    },
    "en-us-nyc": {"3:": ("ah", "ih")},  # [əɪ] in "bird"
    "en-gb-scotland": {
        "3": ("er",), "3:": ("ey",), "U": ("uw",), "U@": ("uw", "r"), "aa": ("aa",), "e@": ("ey",),
        "i": ("ey",), "i@3": ("ih",), "o@": ("ow",),
    },
    "en-gb-x-rp": {"aa": ("aa",), "i": ("ih",), "U@": ("ao",)},
    "en-gb-x-gbclan": {"V": ("uh",)},
    "en-gb-x-gbcwmd": {"V": ("uh",), "aI": ("oy",), "e@": ("er",), "i:": ("ey",)},
    "en-029": {"aa": ("aa",), "a#": ("ae",), "A@": ("aa", "ah"), "O@": ("ao", "ah"), "o@": ("ow", "ah")},
}  # fmt: skip


def phone_classes(mnemonic: str, accent: str) -> tuple[str, ...]:
    """Map one eSpeak phoneme mnemonic, spoken in `accent`, to its phone classes (see module doc)."""
    name = mnemonic.lstrip(_STRESS_MARKS)
    override = ACCENT_OVERRIDES.get(accent, {})
    if name in override:
        return override[name]
    if name in DEFAULT_MAPPING:
        return DEFAULT_MAPPING[name]
    raise CorpusError(
        f"eSpeak phoneme {mnemonic!r} (accent {accent}) has no phone class; add it to DEFAULT_MAPPING "
        "or ACCENT_OVERRIDES in melhubert_lib/data/corpus/phones.py"
    )

