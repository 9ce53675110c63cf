"""Text rules shared by every part of the library: words, stopwords, stemming, quote folding and
sentence ends. Each rule has its home here and nowhere else.

Where two parts of the pipeline need a rule to differ, both variants live here side by side under
names that say what they are for, so the difference is visible and deliberate:

- words: `WORD` (plain ``\\w+`` runs, for shingles and word pairs), `QUERY_WORD` (case kept,
  ``£5.2m`` and ``don't`` whole, for rewriting a follow-up) and `TERM_WORD` (lower-case, also keeps
  ``1,000`` whole, for the extractive answer's terms);
- stopwords: `BM25_STOPWORDS` (bm25s's own English list, for retrieval), `FOLLOW_UP_STOPWORDS`
  (what a follow-up's topic is not made of) and `ANSWER_STOPWORDS` (what an answer's match is not
  made of);
- sentence ends: `sentence_spans` (the index's sentences and chunk packing: ``. ! ?``) and
  `split_quotable` (the extractive answer's sentences, which also end at ``…``);
- names: `proper_names` (runs of capitalised words that name someone or something, for answers
  to "who" questions) and `acronyms` (the initials of such runs, so "NPS" is known to name the
  "National Probation Service").

Not here: offset-keeping folding for quote attribution (`rag.search.quotes.fold`, which uses
`QUOTE_MAP`), tokenisation for the embedding model or chunk sizes (tiktoken, in chunking).
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

# -- words -------------------------------------------------------------------------------------

WORD = re.compile(r"\w+")
# A word for rewriting a follow-up: case kept; money, percentages, abbreviations and contractions whole.
QUERY_WORD = re.compile(r"[A-Za-z0-9£$%][A-Za-z0-9£$%'’.-]*[A-Za-z0-9%]|[A-Za-z0-9]")
# A word for the extractive answer's terms (applied to lower-cased text): like QUERY_WORD, and
# "1,000" stays one word.
TERM_WORD = re.compile(r"[a-z0-9£$%][a-z0-9£$%.,'’-]*[a-z0-9%]|[a-z0-9]")


def words(text: str) -> list[str]:
    """The ``\\w+`` runs of `text`, in order."""
    return WORD.findall(text)


# -- stopwords ---------------------------------------------------------------------------------

BM25_STOPWORDS = "en"  # bm25s's built-in English list, used for BM25 over chunks and queries

# Words that never carry a follow-up's topic over from an earlier turn.
FOLLOW_UP_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been being both but by can
    could did do does doing for from had has have having he her here him his how i if in into is it
    its just me more most my no not now of on or other our out over own said say says she should so
    some such than that the their them then there these they this those to too under up very was we
    were what when where which while who whom whose why will with would you your tell please
    commenters commenter readers reader people anyone someone thing things think thought""".split()
)

# Words that say nothing about whether a sentence answers a question.
ANSWER_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our out over own same she should so some such than
    that the their them then there these they this those through to too under until up very was we
    were what when where which while who whom whose why will with would you your yours
    according said say says saying one reader readers commenter commenters comment post blog did
    """.split()
)

# -- stemming ----------------------------------------------------------------------------------

STEMMER_LANGUAGE = "english"  # Snowball


def new_stemmer() -> Stemmer.Stemmer:
    """A Snowball English stemmer of one's own (PyStemmer objects are not shared across indexes)."""
    return Stemmer.Stemmer(STEMMER_LANGUAGE)


@lru_cache(maxsize=1)
def _shared_stemmer() -> Stemmer.Stemmer:
    return new_stemmer()


def stem(word: str) -> str:
    """`word` stemmed with the Snowball English stemmer."""
    return str(_shared_stemmer().stemWord(word))


# -- quotes and folding ------------------------------------------------------------------------

QUOTE_MAP = str.maketrans(
    {
        "\u2018": "'",  # ‘
        "\u2019": "'",  # ’
        "\u201a": "'",  # ‚
        "\u201b": "'",  # ‛
        "\u2032": "'",  # ′
        "\u201c": '"',  # “
        "\u201d": '"',  # ”
        "\u201e": '"',  # „
        "\u201f": '"',  # ‟
        "\u2033": '"',  # ″
    }
)
_SPACE = re.compile(r"\s+")


def fold_quotes(text: str) -> str:
    """Curly and prime quotes made straight."""
    return text.translate(QUOTE_MAP)


def straighten_apostrophes(text: str) -> str:
    """Only ’ made ' (the extractive answer's terms and the abstention check fold no other quote)."""
    return text.replace("’", "'")


def fold(text: str) -> str:
    """Lower-case, straight quotes, single spaces: the form evidence and answers are compared in."""
    return _SPACE.sub(" ", fold_quotes(text)).strip().lower()


def squash(text: str) -> str:
    """Whitespace runs made one space, lower-cased (quotes left alone)."""
    return " ".join(text.split()).lower()


# -- sentences ---------------------------------------------------------------------------------

# A sentence ends at . ! ? (and a closing quote or bracket, kept with it) before whitespace, or at a
# line break. Only the whitespace is separator: no character of the text is ever dropped.
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+|\n+")
# For quoting: as SENTENCE_END, and an ellipsis (…) also ends a sentence.
QUOTABLE_SENTENCE_END = re.compile(r"([.!?…][\"'”’)\]]*)\s+|\n+")


def sentence_spans(raw: str, start: int, end: int) -> list[tuple[int, int]]:
    """Non-empty sentence spans of raw[start:end] (by `SENTENCE_END`), trimmed of whitespace."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in SENTENCE_END.finditer(raw, start, end):
        spans.append((cursor, match.start()))
        cursor = match.end()
    spans.append((cursor, end))
    out = []
    for s, e in spans:
        while s < e and raw[s].isspace():
            s += 1
        while e > s and raw[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def split_quotable(text: str) -> list[str]:
    """Sentences of `text` (by `QUOTABLE_SENTENCE_END`), each a verbatim substring of it."""
    out, start = [], 0
    for match in QUOTABLE_SENTENCE_END.finditer(text):
        end = match.end(1) if match.group(1) else match.start()
        out.append(text[start:end])
        start = match.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


# -- names -------------------------------------------------------------------------------------

# A capitalised word: "Gauke", "MTCnovo", "NPS", "Grayling’s", "E3". A name runs on through the
# small words inside names ("Ministry of Justice", "Yorkshire and Humber").
_CAPITALISED = r"[A-Z][\w’'&.-]*\w|[A-Z]"
NAME_FILLERS = ("of", "and", "for", "the", "&")  # the small words a name may hold (not name words)
_NAME_RUN = re.compile(
    rf"(?<![\w’'-])(?:{_CAPITALISED})(?:(?:\s+(?:{'|'.join(NAME_FILLERS)}))?\s+(?:{_CAPITALISED}))*"
)
# What may come just before a sentence's first word (so that word is capitalised by position).
_SENTENCE_OPENING = re.compile(r"(?:^|[.!?:;…\"“‘(*–—-])\s*$")
# Capitalised by convention, not names.
_NOT_NAMES = frozenset(
    """i i'm i've i'd i'll i’m i’ve i’d i’ll january february march april may june july august
    september october november december monday tuesday wednesday thursday friday saturday sunday""".split()
)
_POSSESSIVE = re.compile(r"[’']s$")
_WORD_WITH_LETTER = re.compile(r"[^\W\d_][\w’'-]*")
# Words a title leaves in lower case ("Pick of the Week 7").
_TITLE_SMALL_WORDS = frozenset("a an and as at but by for from in into of on or the to with".split())


def _is_acronym(word: str) -> bool:
    bare = _POSSESSIVE.sub("", word).removesuffix("s")
    return len(bare) > 1 and bare.isupper()


def proper_names(text: str) -> list[str]:
    """The names in `text`, in order: runs of capitalised words, less a sentence's first word
    (capitalised by position, unless it is an acronym) and the months, days and "I". A heading (every
    word capitalised but the small ones: "Why David Gauke Deserves Two Cheers") names nothing, since
    it capitalises every word."""
    lower = [t for t in _WORD_WITH_LETTER.findall(text) if not t[:1].isupper()]
    if len(text.split()) >= 3 and all(t.lower() in _TITLE_SMALL_WORDS for t in lower):
        return []
    out = []
    for match in _NAME_RUN.finditer(text):
        run = match.group(0)
        if _SENTENCE_OPENING.search(text[: match.start()]):
            first, _, rest = run.partition(" ")
            run = run if _is_acronym(first) and not rest else rest.strip()
        if any(word.lower() not in _NOT_NAMES for word in run.split()):
            out.append(run)
    return out


def acronyms(text: str) -> set[str]:
    """What each run of two or more capitalised words in `text` is abbreviated to, lower-cased:
    "nps" for "National Probation Service", "moj" (and "mj") for "Ministry of Justice", "hmps" for
    "HM Prison Service". A run joined by "and" is also taken part by part."""
    out = set()
    for match in _NAME_RUN.finditer(text):
        for part in [match.group(0), *re.split(r"\s+(?:and|&)\s+", match.group(0))]:
            tokens = part.split()
            if sum(t[:1].isupper() for t in tokens) < 2:
                continue
            capitals = [t.lower() if _is_acronym(t) else t[0].lower() for t in tokens if t[:1].isupper()]
            out.add("".join(capitals))
            out.add("".join(t.lower() if _is_acronym(t) else t[0].lower() for t in tokens))
    return out
