"""Full-text search over chunks: which passages of the documents in scope share the
question's words, best first.

SQLite: the FTS5 table assistant_chunk_fts (migration 0013) and its BM25; PostgreSQL:
the chunk's `search` tsvector (german and english) and ts_rank_cd. The question's words
are OR-ed, so a passage with some of them is found and one with more ranks higher.

The user's text never becomes query syntax: it is cut into words (letters and digits),
and each word goes to the database as a quoted string (FTS5) or a parameter (PostgreSQL).
German and English function words are dropped (they match nearly every passage, which
costs time and ranks nothing), unless the question has no other words. A word also
finds the words it begins: "Urlaub" finds "Urlaubsantrag", the German compound, and
"Verträgen" finds "Vertrag" (on SQLite through a light suffix stripping, on PostgreSQL
through its stemmers). Case and diacritics do not count: "Übersicht" finds "ubersicht".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from django.db import connection

from assistant.documents.models import Chunk, Document

# At most this many distinct words of a question go into the query: a pasted page is
# still one query of bounded cost.
QUERY_WORDS_MAX = 32
# A word this long or longer also finds the words it begins (after STEM_SUFFIXES).
PREFIX_MIN_CHARS = 4
# SQLite: ranking costs about 1-2 µs per matching chunk (bm25 and the join that keeps to
# the scope), counting a word's chunks about a twentieth of that. A question's words are
# counted first and the commonest left out while the others match more than this many
# chunks together: a word in most passages adds almost nothing to BM25 (its IDF is near
# zero) and most of the cost. When even the rarest word matches more, the passages with
# all the words are ranked, if there are any, else those with the rarest.
MATCH_BUDGET = 10_000

_WORD = re.compile(r"[^\W_]+")

# What the question's words lose before they are looked up as the beginnings of words:
# German and English inflections, longest first, each only when at least PREFIX_MIN_CHARS
# letters stay. "Verträgen" -> "verträg" (folded "vertrag"), "policies" -> "polic".
STEM_SUFFIXES = ("ungen", "innen", "ies", "ing", "en", "er", "es", "em", "ed", "e", "n", "s")

# Words too common to tell passages apart, German and English.
_STOPWORDS_TEXT = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours
    aber alle allem allen aller alles als also am an ander andere anderem anderen anderer anderes
    auch auf aus bei bin bis bist da damit dann das dass dein deine dem den denn der des dessen
    deshalb die dies diese diesem diesen dieser dieses doch dort du durch ein eine einem einen
    einer eines er es etwas euer eure für gegen gewesen hab habe haben hat hatte hätte hier hin
    hinter ich ihr ihre im in ist ja jede jedem jeden jeder jedes jetzt kann kein keine können
    könnte man manche mein meine mich mir mit muss musste nach nicht nichts noch nun nur ob oder
    ohne sehr sein seine sich sie sind so solche soll sollte sondern sonst über um und uns unser
    unter viel vom von vor war waren warum was weil welche welchem welchen welcher welches wenn
    wer werde werden wie wieder will wir wird wo wollen würde zu zum zur zwar zwischen
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def query_words(question: str) -> list[str]:
    """The question's words to look up: lower case, each once, in order, without function
    words unless it has only those; at most QUERY_WORDS_MAX."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(question)))
    content = [word for word in words if word not in STOPWORDS]
    return (content or words)[:QUERY_WORDS_MAX]


def stem(word: str) -> str:
    """`word` without one inflection suffix (STEM_SUFFIXES), keeping PREFIX_MIN_CHARS letters."""
    for suffix in STEM_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= PREFIX_MIN_CHARS:
            return word[: -len(suffix)]
    return word


def fts5_terms(question: str) -> list[str]:
    """The question's words as FTS5 strings, each once: a word of PREFIX_MIN_CHARS letters
    or more as the prefix of its stem (`"vertrag"*`), a shorter one as it is (`"kw"`).

    Only letters and digits get here, so a quote, a `*`, `NEAR` or `-` is never syntax;
    FTS5 folds case and diacritics inside the quotes as it did in the text.
    """
    words = query_words(question)
    terms = [f'"{stem(word)}"*' if len(word) >= PREFIX_MIN_CHARS else f'"{word}"' for word in words]
    return list(dict.fromkeys(terms))


def fts5_expression(question: str) -> str:
    """The question as an FTS5 query: its terms (fts5_terms) OR-ed; empty without words."""
    return " OR ".join(fts5_terms(question))


def scope_sql(
    documents: list[uuid.UUID], collections: list[int], *, document_id: str = "c.document_id"
) -> tuple[str, list]:
    """The condition on `c` (a chunk) and `d` (its document) for the documents in scope:
    ready, and one of `documents` or in one of `collections`; `document_id` names the
    column of the document's id ("d.id" for a condition on documents alone)."""
    parts, params = [], []
    if documents:
        parts.append(f"{document_id} IN ({', '.join(['%s'] * len(documents))})")
        params += [document_key(pk) for pk in documents]
    if collections:
        parts.append(f"d.collection_id IN ({', '.join(['%s'] * len(collections))})")
        params += [int(pk) for pk in collections]
    return f"d.status = %s AND ({' OR '.join(parts)})", [Document.Status.READY, *params]


def document_key(pk: uuid.UUID | str) -> str:
    """A document id as the database stores it (SQLite: 32 hex digits; PostgreSQL: uuid)."""
    value = pk if isinstance(pk, uuid.UUID) else uuid.UUID(str(pk))
    return value.hex if connection.vendor == "sqlite" else str(value)


def fulltext(
    question: str, *, documents: Iterable[uuid.UUID], collections: Iterable[int], limit: int
) -> list[tuple[int, float]]:
    """The chunks in scope that share words with `question`, best first: (chunk id, score),
    a larger score better. Empty without words, without scope, or on a database with
    neither FTS5 nor PostgreSQL's full-text search."""
    documents, collections = list(documents), list(collections)
    words = query_words(question)
    if not words or not (documents or collections) or limit <= 0:
        return []
    if connection.vendor == "sqlite":
        return _fulltext_sqlite(question, documents, collections, limit)
    if connection.vendor == "postgresql":
        return _fulltext_postgres(words, documents, collections, limit)
    return []


def _tables() -> tuple[str, str]:
    return Chunk._meta.db_table, Document._meta.db_table


def _fulltext_sqlite(
    question: str, documents: list[uuid.UUID], collections: list[int], limit: int
) -> list[tuple[int, float]]:
    terms = fts5_terms(question)
    with connection.cursor() as cursor:
        if len(terms) == 1:
            return _bm25(cursor, terms[0], documents, collections, limit)
        counted = sorted((_matches(cursor, term), term) for term in terms)
        counted = [(count, term) for count, term in counted if count] or counted[:1]
        chosen, total = [], 0
        for count, term in counted:
            if chosen and total + count > MATCH_BUDGET:
                break
            chosen.append(term)
            total += count
        if total > MATCH_BUDGET and len(counted) > 1:
            # Every word is common: the passages with all of them, if there are any.
            both = _bm25(cursor, " AND ".join(term for _, term in counted), documents, collections, limit)
            if both:
                return both
        return _bm25(cursor, " OR ".join(chosen), documents, collections, limit)


def _matches(cursor, term: str) -> int:
    """How many chunks, of anyone's documents, contain `term`: a fraction of the cost of
    ranking them."""
    cursor.execute("SELECT COUNT(*) FROM assistant_chunk_fts WHERE assistant_chunk_fts MATCH %s", [term])
    return cursor.fetchone()[0]


def _bm25(
    cursor, expression: str, documents: list[uuid.UUID], collections: list[int], limit: int
) -> list[tuple[int, float]]:
    chunk, document = _tables()
    scope, params = scope_sql(documents, collections)
    # bm25() is lower for a better match: its negation is the score.
    sql = f"""
        SELECT c.id, -bm25(assistant_chunk_fts) AS score
        FROM assistant_chunk_fts
        JOIN {chunk} c ON c.id = assistant_chunk_fts.rowid
        JOIN {document} d ON d.id = c.document_id
        WHERE assistant_chunk_fts MATCH %s AND {scope}
        ORDER BY score DESC, c.id
        LIMIT %s
    """  # noqa: S608 -- table names from the models; every value is a parameter
    cursor.execute(sql, [expression, *params, limit])
    return [(row[0], float(row[1])) for row in cursor.fetchall()]


def _fulltext_postgres(
    words: list[str], documents: list[uuid.UUID], collections: list[int], limit: int
) -> list[tuple[int, float]]:
    chunk, document = _tables()
    scope, params = scope_sql(documents, collections)
    # Each word as a quoted lexeme and a prefix, in both configurations, OR-ed: the word
    # is a parameter that quote_literal quotes, never tsquery syntax.
    one = (
        "to_tsquery('german', quote_literal(%s) || ':*') || to_tsquery('english', quote_literal(%s) || ':*')"
    )
    query = " || ".join([one] * len(words))
    sql = f"""
        SELECT c.id, ts_rank_cd(c.search, q.query) AS score
        FROM (SELECT {query} AS query) q
        JOIN {chunk} c ON c.search @@ q.query
        JOIN {document} d ON d.id = c.document_id
        WHERE {scope}
        ORDER BY score DESC, c.id
        LIMIT %s
    """  # noqa: S608 -- table names from the models; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(word for word in words for _ in range(2)), *params, limit])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]
