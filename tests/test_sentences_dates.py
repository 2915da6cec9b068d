"""A period after a day or an ordinal ("am 14. Oktober", "im 19. Jahrhundert") does not
end a sentence: a podcast turn once ended "…am 14." and the next began "Oktober 2019"."""

from longplay.text.sentences import split_sentences


def test_a_german_date_stays_in_its_sentence() -> None:
    text = (
        "Nach drei Jahren Bauzeit eröffnete die Brücke am 14. Oktober 2019 wieder. "
        "Sie ist 300 Meter lang."
    )
    assert split_sentences(text) == [
        "Nach drei Jahren Bauzeit eröffnete die Brücke am 14. Oktober 2019 wieder.",
        "Sie ist 300 Meter lang.",
    ]
    assert split_sentences("Am 3. Mai und am 1. JANUAR war zu. Am 14. Okt. 2019 nicht.") == [
        "Am 3. Mai und am 1. JANUAR war zu.",
        "Am 14. Okt. 2019 nicht.",
    ]


def test_a_german_ordinal_before_a_counted_noun_stays_in_its_sentence() -> None:
    text = (
        "Im 19. Jahrhundert wuchs die Stadt. Zum 2. Mal gewann sie, im 4. Stock, "
        "am 3. Tag. Der 1. Weltkrieg begann 1914. Sie landete auf Platz 2. Danach war Pause."
    )
    assert split_sentences(text) == [
        "Im 19. Jahrhundert wuchs die Stadt.",
        "Zum 2. Mal gewann sie, im 4. Stock, am 3. Tag.",
        "Der 1. Weltkrieg begann 1914.",
        "Sie landete auf Platz 2.",
        "Danach war Pause.",
    ]


def test_dates_in_other_languages_that_write_the_ordinal_period() -> None:
    assert split_sentences("Otevřeno 14. Října 2019. Polska: 3. Maja. Suomi: 6. Joulukuuta.") == [
        "Otevřeno 14. Října 2019.",
        "Polska: 3. Maja.",
        "Suomi: 6. Joulukuuta.",
    ]


def test_english_numbers_still_end_sentences() -> None:
    assert split_sentences("It happened in 2019. Then it rained.") == [
        "It happened in 2019.",
        "Then it rained.",
    ]
    assert split_sentences("The score was 3. Then we left. The year was 2019. October came.") == [
        "The score was 3.",
        "Then we left.",
        "The year was 2019.",
        "October came.",
    ]
