"""The language catalogue: the codes longplay takes and the English names prompts use."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from longplay.text.writing import foreign_script, script_of, scripts_of_language

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "mt": "Maltese", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese",
    "en-GB": "British English", "en-US": "American English", "es-MX": "Mexican Spanish",
    "fr-CA": "Canadian French", "pt-BR": "Brazilian Portuguese",
    "pt-PT": "European Portuguese", "zh-Hans": "Simplified Chinese",
    "zh-Hant": "Traditional Chinese",
}  # fmt: skip
"""Codes (ISO 639-1, and a few regional variants) and the English names prompts use."""
_ALIASES = {
    "nb": "no", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-tw": "zh-Hant", "zh-hk": "zh-Hant",
    # The codes ISO 639 withdrew, which Java, Android and older systems still send, and
    # Filipino, the standard form of Tagalog.
    "iw": "he", "in": "id", "fil": "tl",
}  # fmt: skip
_OWN_NAMES = {
    "deutsch": "de", "français": "fr", "francais": "fr", "español": "es", "espanol": "es",
    "castellano": "es", "italiano": "it", "português": "pt", "portugues": "pt",
    "nederlands": "nl", "polski": "pl", "svenska": "sv", "dansk": "da", "norsk": "no",
    "suomi": "fi", "türkçe": "tr", "turkce": "tr", "čeština": "cs", "cestina": "cs",
    "magyar": "hu", "română": "ro", "romana": "ro", "ελληνικά": "el", "русский": "ru",
    "українська": "uk", "العربية": "ar", "עברית": "he", "हिन्दी": "hi", "日本語": "ja",
    "中文": "zh", "한국어": "ko", "tiếng việt": "vi", "bahasa indonesia": "id",
}  # fmt: skip
"""Languages by their own names, as their speakers type them (``Deutsch``, ``日本語``),
with and without their accents: a German team wrote ``Deutsch`` and got a 422."""
_CODES = {
    **{alias.lower(): code for alias, code in _ALIASES.items()},
    **{code.lower(): code for code in LANGUAGES},
}
_LOOKUP = {
    **_OWN_NAMES,
    **_CODES,
    **{name.lower(): code for code, name in LANGUAGES.items()},
}


@dataclass(frozen=True)
class Language:
    """A language as prompts name it (``German``) and files are named after it (``de``)."""

    code: str
    name: str

    @property
    def base(self) -> str:
        """The code without its region or script (``pt-BR`` → ``pt``), as speech
        recognition names languages."""
        return self.code.split("-")[0]

    @classmethod
    def find(cls, value: str) -> Language:
        """``de``, ``DE``, ``de_DE``'s base, ``German``, ``german`` or ``Deutsch`` →
        German (``de``)."""
        key = value.strip().replace("_", "-").lower()
        code = _LOOKUP.get(key) or _LOOKUP.get(key.split("-")[0])
        if code is None:
            raise ValueError(
                f"unknown language {value!r}: give an ISO 639-1 code such as 'de' or a "
                "name such as 'German' or 'Deutsch'"
            )
        return cls(code, LANGUAGES[code])


def is_language_code(value: str) -> bool:
    """Whether ``value`` is a code of the catalogue or an alias of one, in any case."""
    return value.lower() in _CODES


COMMON_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({
        "the", "and", "of", "it", "is", "are", "was", "were", "that", "this", "with", "for", "from",
        "have", "has", "had", "will", "would", "which", "their", "they", "there", "about", "been",
        "not", "but", "what", "when", "who", "its", "than", "into",
    }),
    "de": frozenset({
        "der", "die", "das", "und", "ist", "sind", "war", "wurde", "werden", "wird", "nicht", "mit",
        "von", "den", "dem", "des", "ein", "eine", "einen", "einer", "auf", "für", "sich", "auch",
        "bei", "nach", "über", "aus", "oder", "noch", "nur", "wie", "wir", "sie", "es", "im", "zum",
        "zur", "dass",
    }),
    "fr": frozenset({
        "le", "la", "les", "et", "est", "sont", "était", "des", "une", "un", "du", "dans", "pour",
        "pas", "que", "qui", "sur", "avec", "ce", "cette", "au", "aux", "par", "plus", "été", "ont",
        "leur", "mais", "comme", "nous", "vous", "il", "elle",
    }),
    "es": frozenset({
        "el", "la", "los", "las", "y", "es", "son", "fue", "del", "que", "en", "un", "una", "por",
        "con", "para", "se", "su", "sus", "al", "como", "más", "está", "este", "esta", "pero",
        "también", "ha", "han", "sobre", "entre",
    }),
    "it": frozenset({
        "il", "lo", "la", "gli", "le", "e", "è", "di", "che", "un", "una", "per", "con", "del",
        "della", "dei", "delle", "sono", "non", "si", "al", "nel", "nella", "alla", "come", "anche",
        "più", "ha", "hanno", "questo", "questa",
    }),
    "pt": frozenset({
        "o", "a", "os", "as", "e", "é", "do", "da", "dos", "das", "que", "em", "um", "uma", "para",
        "com", "não", "se", "no", "na", "por", "mais", "foi", "são", "ao", "à", "está", "este",
        "esta", "também", "pelo", "pela",
    }),
    "nl": frozenset({
        "de", "het", "een", "en", "van", "is", "zijn", "dat", "niet", "op", "te", "met", "voor",
        "ook", "aan", "die", "er", "maar", "bij", "wordt", "werd", "worden", "naar", "uit", "dit",
        "deze", "heeft", "hebben",
    }),
}  # fmt: skip
"""Short words that are common in one language's writing, by code: enough to tell a
few of the languages written in Latin letters apart, not to tell every one. Words two
of them share count for both, so it is the words of one alone that decide."""
MIN_COMMON_WORDS = 2
"""The fewest common words a text needs for its language to be told by them."""
_ONE_SCRIPT = {"Kana": "ja", "Hangul": "ko", "Greek": "el", "Hebrew": "he", "Thai": "th"}
"""Scripts that one language of the catalogue is written in (Chinese characters alone
are Chinese; with kana, Japanese)."""
_LATIN_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?")


def language_of_text(text: str) -> str | None:
    """The code of the language ``text`` is most likely written in: by its letters'
    script, and for Latin letters by its common words (:data:`COMMON_WORDS`); None
    where neither tells (a Cyrillic text, a Polish one, a few words)."""
    letters = Counter(s for s in map(script_of, text) if s is not None)
    if not letters:
        return None
    script = letters.most_common(1)[0][0]
    if script in ("Han", "Kana"):
        return "ja" if letters["Kana"] > 0.05 * (letters["Han"] + letters["Kana"]) else "zh"
    if script != "Latin":
        return _ONE_SCRIPT.get(script)
    return _by_common_words(text)


def _by_common_words(text: str) -> str | None:
    words = [w.lower() for w in _LATIN_WORD.findall(text)]
    counts = Counter({code: sum(w in said for w in words) for code, said in COMMON_WORDS.items()})
    [(best, hits), (_, second)] = counts.most_common(2)
    return best if hits >= MIN_COMMON_WORDS and hits > second else None


def other_language(text: str, code: str) -> str | None:
    """What ``text`` is plainly written in where that is not the language ``code``: a
    language's code, or, where only its letters tell, their script (``Latin``); None
    where it may well be in ``code``. A Latin-script language without common words of
    its own is told apart from English only."""
    guess = language_of_text(text)
    script = foreign_script(text, scripts_of_language(code))
    if script is not None:
        return guess or script
    base = code.split("-")[0]
    if guess is None or guess == base:
        return None
    return guess if base in COMMON_WORDS or guess == "en" else None
