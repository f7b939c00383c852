"""A seeded generator of grammatical English sentences over a vocabulary of thousands of words.

Content words come from the noun, verb and adjective lists shipped in the `wonderwords` package
(verbs there are base forms, so every template uses them after a modal, `to`, `did` or as an
imperative and no conjugation is needed); function words are listed here. Within each word class
a seeded random order gets Zipf-like weights (the k-th word has weight 1/(k+10)), so some content
words recur often, as in real text. Sentences are lower-case words and apostrophes only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .errors import CorpusError

_WORD = re.compile(r"[a-z]+")
_ZIPF_OFFSET = 10

DETERMINERS = ("the", "a", "this", "that", "every", "each", "my", "your", "his", "her", "our", "their", "one")
SUBJECT_PRONOUNS = ("i", "you", "we", "they", "he", "she")
BE_FORMS = {"i": "am", "you": "are", "we": "are", "they": "are", "he": "is", "she": "is"}
MODALS = ("can", "could", "will", "would", "should", "must", "might", "may")
NEGATED_AUXILIARIES = ("can't", "won't", "didn't", "couldn't", "shouldn't", "wouldn't", "mustn't")
PREPOSITIONS = (
    "in", "on", "at", "with", "from", "under", "over", "near", "behind", "beside", "through", "into",
    "across", "along", "without", "before", "after", "around", "about", "for", "by", "toward",
)  # fmt: skip
ADVERBS = ("never", "often", "always", "really", "also", "still", "sometimes", "probably", "just", "soon")
CONJUNCTIONS = ("and", "but", "so", "because", "while", "when", "until", "although")
DESIRE_VERBS = ("want", "need", "try", "hope", "like", "plan", "decide", "forget")  # take "to" + verb
IMPERATIVE_OPENERS = ("please", "now", "then", "first")
FUNCTION_WORDS = frozenset(
    DETERMINERS + SUBJECT_PRONOUNS + tuple(BE_FORMS.values()) + MODALS + NEGATED_AUXILIARIES + PREPOSITIONS
    + ADVERBS + CONJUNCTIONS + DESIRE_VERBS + IMPERATIVE_OPENERS
    + ("an", "is", "to", "did", "there", "where", "wants", "needs", "tries", "hopes", "likes", "plans",
       "decides", "forgets")
)  # fmt: skip

_AN_EXCEPTIONS = ("uni", "use", "usu", "uti", "ure", "uro", "eu", "one", "once")
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")


def load_word_list(name: str) -> tuple[str, ...]:
    """Return the lower-case, letters-only, non-profane words of a wonderwords asset list, sorted."""
    assets = resources.files("wonderwords") / "assets"
    try:
        words = (assets / name).read_text().split("\n")
        profane = set((assets / "profanitylist.txt").read_text().split("\n"))
    except FileNotFoundError:
        raise CorpusError(
            f"wonderwords asset {name!r} not found in {assets}; reinstall it (pip install wonderwords)"
        ) from None
    return tuple(sorted({w for w in words if _WORD.fullmatch(w) and len(w) > 1 and w not in profane}))


@dataclass(frozen=True)
class Vocabulary:
    """The content-word lists the generator draws from."""

    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]

    def words(self) -> frozenset[str]:
        """Every word that generated sentences can contain."""
        return frozenset(self.nouns + self.verbs + self.adjectives) | FUNCTION_WORDS


def default_vocabulary() -> Vocabulary:
    """The wonderwords noun, verb and adjective lists (function words excluded from them)."""

    def content(name: str) -> tuple[str, ...]:
        return tuple(w for w in load_word_list(name) if w not in FUNCTION_WORDS)

    return Vocabulary(content("nounlist.txt"), content("verblist.txt"), content("adjectivelist.txt"))


class _WeightedWords:
    """Draws words of one class with Zipf-like weights over a seeded random order."""

    def __init__(self, words: tuple[str, ...], rng: np.random.Generator) -> None:
        self.words = tuple(words[i] for i in rng.permutation(len(words)))
        weights = 1.0 / (np.arange(len(words)) + _ZIPF_OFFSET)
        self.cumulative = np.cumsum(weights / weights.sum())

    def draw(self, rng: np.random.Generator) -> str:
        index = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        return self.words[min(index, len(self.words) - 1)]


class SentenceGenerator:
    """Source of sentences of `min_words`..`max_words` words; never repeats a sentence."""

    def __init__(
        self, rng: np.random.Generator, min_words: int, max_words: int, vocabulary: Vocabulary | None = None
    ) -> None:
        if not 2 <= min_words <= max_words:
            raise CorpusError(
                f"sentence length range min_words={min_words}, max_words={max_words} is invalid; "
                "use 2 <= min_words <= max_words (CorpusScale)"
            )
        vocabulary = vocabulary or default_vocabulary()
        self.rng = rng
        self.min_words, self.max_words = min_words, max_words
        self.nouns = _WeightedWords(vocabulary.nouns, self.rng)
        self.verbs = _WeightedWords(vocabulary.verbs, self.rng)
        self.adjectives = _WeightedWords(vocabulary.adjectives, self.rng)
        self.used: set[str] = set()
        self._templates: tuple[Callable[[], list[str]], ...] = (
            self._modal_clause, self._modal_clause, self._negated_clause, self._desire_clause,
            self._copula_clause, self._there_is_clause, self._question, self._imperative,
        )  # fmt: skip

    def sentence(self) -> str:
        """Return a new sentence (space-separated lower-case words) not returned before."""
        for _ in range(1000):
            target = int(self.rng.integers(self.min_words, self.max_words + 1))
            words = self._clause()
            while len(words) < target:
                if self.rng.random() < 0.5:
                    words += self._prepositional_phrase()
                else:
                    words += [self._choice(CONJUNCTIONS)] + self._declarative()
            text = " ".join(words)
            if self.min_words <= len(words) <= self.max_words and text not in self.used:
                self.used.add(text)
                return text
        raise CorpusError(
            f"could not generate a new sentence of {self.min_words}..{self.max_words} words; "
            "widen the range (CorpusScale.min_words/max_words)"
        )

    def _choice(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def _clause(self) -> list[str]:
        return self._templates[int(self.rng.integers(len(self._templates)))]()

    def _declarative(self) -> list[str]:
        options = (self._modal_clause, self._negated_clause, self._desire_clause, self._copula_clause)
        return options[int(self.rng.integers(len(options)))]()

    def _noun_phrase(self) -> list[str]:
        noun = self.nouns.draw(self.rng)
        words = [self.adjectives.draw(self.rng), noun] if self.rng.random() < 0.4 else [noun]
        determiner = self._choice(DETERMINERS)
        if determiner == "a" and _takes_an(words[0]):
            determiner = "an"
        return [determiner, *words]

    def _subject(self) -> list[str]:
        """A pronoun or a noun phrase."""
        if self.rng.random() < 0.5:
            return [self._choice(SUBJECT_PRONOUNS)]
        return self._noun_phrase()

    def _prepositional_phrase(self) -> list[str]:
        return [self._choice(PREPOSITIONS), *self._noun_phrase()]

    def _object(self) -> list[str]:
        return self._noun_phrase() if self.rng.random() < 0.8 else []

    def _modal_clause(self) -> list[str]:
        subject = self._subject()
        adverb = [self._choice(ADVERBS)] if self.rng.random() < 0.2 else []
        return [*subject, self._choice(MODALS), *adverb, self.verbs.draw(self.rng), *self._object()]

    def _negated_clause(self) -> list[str]:
        subject = self._subject()
        return [*subject, self._choice(NEGATED_AUXILIARIES), self.verbs.draw(self.rng), *self._object()]

    def _desire_clause(self) -> list[str]:
        subject = self._subject()
        verb = self._choice(DESIRE_VERBS)
        if _third_person_singular(subject):
            verb = "tries" if verb == "try" else verb + "s"
        return [*subject, verb, "to", self.verbs.draw(self.rng), *self._object()]

    def _copula_clause(self) -> list[str]:
        subject = self._subject()
        be = BE_FORMS[subject[0]] if len(subject) == 1 else "is"
        adverb = [self._choice(ADVERBS)] if self.rng.random() < 0.3 else []
        return [*subject, be, *adverb, self.adjectives.draw(self.rng)]

    def _there_is_clause(self) -> list[str]:
        return ["there", "is", *self._noun_phrase(), *self._prepositional_phrase()]

    def _question(self) -> list[str]:
        if self.rng.random() < 0.3:
            return ["where", "is", *self._noun_phrase()]
        subject = self._subject()
        return [self._choice(MODALS[:5] + ("did",)), *subject, self.verbs.draw(self.rng), *self._object()]

    def _imperative(self) -> list[str]:
        opener = [self._choice(IMPERATIVE_OPENERS)] if self.rng.random() < 0.3 else []
        return [*opener, self.verbs.draw(self.rng), *self._noun_phrase()]


def _third_person_singular(subject: list[str]) -> bool:
    """Whether a subject from `SentenceGenerator._subject` takes "wants" rather than "want"."""
    return len(subject) > 1 or subject[0] in ("he", "she")


def _takes_an(word: str) -> bool:
    """Whether the indefinite article before `word` is "an" (spelling rule with common exceptions)."""
    if word.startswith(_SILENT_H):
        return True
    return word[0] in "aeiou" and not word.startswith(_AN_EXCEPTIONS)
