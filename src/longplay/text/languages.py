"""The language catalogue: the codes longplay takes and the English names prompts use."""

from __future__ import annotations

from dataclasses import dataclass

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
_CODES = {
    **{alias.lower(): code for alias, code in _ALIASES.items()},
    **{code.lower(): code for code in LANGUAGES},
}
_LOOKUP = {**_CODES, **{name.lower(): code for code, name in LANGUAGES.items()}}


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
        """``de``, ``DE``, ``de_DE``'s base, ``German`` or ``german`` → German (``de``)."""
        key = value.strip().replace("_", "-").lower()
        code = _LOOKUP.get(key) or _LOOKUP.get(key.split("-")[0])
        if code is None:
            raise ValueError(
                f"unknown language {value!r}: give an ISO 639-1 code such as 'de' or an "
                "English name such as 'German'"
            )
        return cls(code, LANGUAGES[code])


def is_language_code(value: str) -> bool:
    """Whether ``value`` is a code of the catalogue or an alias of one, in any case."""
    return value.lower() in _CODES
