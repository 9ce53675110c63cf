"""rag/text.py: the shared text rules keep each caller's behaviour, and their variants differ only
where they say they do."""

from __future__ import annotations

import pytest

from rag import text


@pytest.mark.parametrize(
    "raw",
    ["", "One. Two! Three?", "He said “stop.” Then left.\n\nNew line", "  spaced  .  out  ", "Wait… what?"],
)
def test_sentence_spans_are_trimmed_and_drop_only_whitespace(raw: str) -> None:
    spans = text.sentence_spans(raw, 0, len(raw))
    assert all(raw[s:e] == raw[s:e].strip() and e > s for s, e in spans)
    bounds = [0, *(i for span in spans for i in span), len(raw)]
    gaps = [raw[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]
    assert all(not gap.strip() for gap in gaps), "only whitespace falls between sentences"


def test_quotable_sentences_also_end_at_an_ellipsis_and_index_sentences_do_not() -> None:
    raw = "It was late… Nobody came. Then? Yes."
    assert text.split_quotable(raw) == ["It was late…", "Nobody came.", "Then?", "Yes."]
    assert [raw[s:e] for s, e in text.sentence_spans(raw, 0, len(raw))] == [
        "It was late… Nobody came.",
        "Then?",
        "Yes.",
    ]


def test_fold_straightens_every_curly_and_prime_quote() -> None:
    assert text.fold("  ‘A’ “B” ‚C‛ „D‟ ′E″\n F ") == "'a' \"b\" 'c' \"d\" 'e\" f"
    assert text.fold_quotes("don’t") == "don't" == text.straighten_apostrophes("don’t")
    assert text.straighten_apostrophes("‘x’") == "‘x'"  # only ’, as the extractive terms need


def test_word_rules_differ_only_where_they_say() -> None:
    assert text.words("£5.2m isn't 1,000") == ["5", "2m", "isn", "t", "1", "000"]
    assert text.QUERY_WORD.findall("£5.2m isn't 1,000") == ["£5.2m", "isn't", "1", "000"]
    assert text.TERM_WORD.findall("£5.2m isn't 1,000") == ["£5.2m", "isn't", "1,000"]


def test_stopword_lists_and_stemmer() -> None:
    assert "commenters" in text.FOLLOW_UP_STOPWORDS and "commenters" in text.ANSWER_STOPWORDS
    assert "people" in text.FOLLOW_UP_STOPWORDS and "people" not in text.ANSWER_STOPWORDS
    assert text.stem("sentencing") == text.new_stemmer().stemWord("sentencing") == "sentenc"


@pytest.mark.parametrize(
    "raw,names",
    [
        ("Here's Rob Allen's view of the Ministry of Justice.", ["Rob Allen's", "Ministry of Justice"]),
        ("Even the head of NPS is a former prison governor.", ["NPS"]),
        ("NPS does probation work.", ["NPS"]),  # an acronym opening a sentence is still a name
        ("Grayling said so. Sodexo agreed.", []),  # so is a sentence's first word, by position
        ("In May I met Mr Grayling.", ["Mr Grayling"]),
        ("Sentence Planning: Why David Gauke Deserves Two Cheers", []),  # a heading
        ("", []),
    ],
)
def test_proper_names_are_capitalised_runs_not_opening_a_sentence(raw: str, names: list[str]) -> None:
    assert text.proper_names(raw) == names


def test_acronyms_are_initials_of_capitalised_runs() -> None:
    found = text.acronyms("Who heads the National Probation Service and HM Prison Service?")
    assert {"nps", "hmps"} <= found
    assert "moj" in text.acronyms("the Ministry of Justice")
