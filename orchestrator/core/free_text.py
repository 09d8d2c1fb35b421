"""Free-text search over workflows: what counts as a match, shared by the store and the archive.

A query is up to MAX_WORDS words; a workflow matches when every word appears, ignoring case,
somewhere in its id, correlation id, input, output, variables or reason, as stored (JSON text).
Substring matching on the stored text needs no index to keep up to date, and a search reads
at most MAX_SCANNED workflows per page (see the stores), so it costs one bounded scan.
"""

from __future__ import annotations

import json

MAX_WORDS = 10
MAX_WORD_CHARS = 100
MAX_SCANNED = 10_000
"""Workflows one search page may read for a free-text query before it answers (perhaps short)."""


def words(text: str) -> list[str]:
    """The words of a query, lower-cased; ValueError when there are too many or too long."""
    found = [w.lower() for w in text.split()]
    if len(found) > MAX_WORDS or any(len(w) > MAX_WORD_CHARS for w in found):
        raise ValueError(f"free text takes at most {MAX_WORDS} words of at most {MAX_WORD_CHARS} characters")
    return found


def matches(query_words: list[str], *blobs: str) -> bool:
    """Whether every word is in one of the blobs (stored JSON text, where a non-ASCII or quoted
    word may appear escaped)."""
    if not query_words:
        return True
    haystack = "\n".join(blobs).lower()
    return all(word in haystack or json.dumps(word)[1:-1] in haystack for word in query_words)
