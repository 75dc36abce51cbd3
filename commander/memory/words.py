"""The blind index: memories are searched by keyed hashes of their words, never the words.

A text is normalised (Unicode NFKC, casefolded), split into words (runs of letters and digits),
stripped of a few English function words that would match everything, and lightly stemmed (a
plural `s`/`es`/`ies`, `ing`, `ed`, a final `e`: "deploys", "deployed" and "deploying" all become
"deploy").
Each word then becomes an opaque token: the first 16 hex digits (64 bits) of
HMAC-SHA256(index key, scope NUL word), with cmdr.box.index_key, which is not a Fernet key.
Memories are indexed as those tokens in an FTS5 table (models.MemoryWords), and a query is mapped
the same way, so FTS5 matches and ranks (bm25) without ever holding a word.

The scope (an agent's name, or `shared`) goes into every token, so the same word in two scopes
gives two unrelated tokens: equal words can be linked only within one scope. What the index shows
to someone holding the database but not the index key: which memories of a scope share words, how
often a token occurs, and how many words each memory has. Not the words themselves: a 64-bit keyed
hash cannot be reversed or guessed without the key (a dictionary attack needs it). 64 bits keep
the index small; two words of a scope sharing a token (about 1 in 10^10 for a scope of 100,000
distinct words) would only make a search find a memory it should not rank.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata

WORD = re.compile(r"[^\W_]+")
# Words so common they would match every memory, and carry no meaning for a search.
STOP = frozenset("a an and are as at be but by for from has have i in is it its of on or s so t that the this to "
                 "was were will with you your".split())
TOKEN_HEX = 16
# Distinct words of a query searched: each costs a look-up per scope, and a long prompt's words
# outnumber what a ranking needs (bench/memory.py: 64 words over two scopes took 20 ms, 16 about
# 5). The longest are kept: long words are the rarer ones (Zipf), so they say most and match least.
QUERY_WORDS = 16


def stem(word: str) -> str:
    """A light suffix strip (not Porter): enough that a plural or a tense finds its word."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif len(word) >= 6 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) >= 5 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) >= 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    # "store", "stored", "storing" and "stores" meet at "stor".
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def words(text: str) -> list[str]:
    """The normalised words of `text`, in order, repeats kept (bm25 counts them)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [stem(word) for word in WORD.findall(folded) if word not in STOP]


# Every lease maps its prompt's words (up to QUERY_WORDS, in two scopes) and a prompt's words
# recur: the tokens of the words met last are kept (an HMAC costs ~3 µs, a look-up ~0.2).
TOKENS_KEPT = 8192


@functools.lru_cache(maxsize=TOKENS_KEPT)
def token(index_key: bytes, scope: str, word: str) -> str:
    return hmac.new(index_key, f"{scope}\0{word}".encode(), hashlib.sha256).hexdigest()[:TOKEN_HEX]


def tokens(index_key: bytes, scope: str, text: str) -> list[str]:
    return [token(index_key, scope, word) for word in words(text)]


def keyed_hash(index_key: bytes, kind: str, text: str) -> str:
    """A keyed hash of a whole text (a memory's key, its content): equal texts, equal hashes."""
    return hmac.new(index_key, f"{kind}\0{text}".encode(), hashlib.sha256).hexdigest()[:32]


def searched(text: str) -> list[str]:
    """The words of `text` a search looks for: its QUERY_WORDS longest distinct ones."""
    return sorted(dict.fromkeys(words(text)), key=len, reverse=True)[:QUERY_WORDS]


def query_tokens(index_key: bytes, scopes: list[str], text: str) -> list[str]:
    """The tokens of every searched word of `text` in each of `scopes`."""
    distinct = searched(text)
    return [token(index_key, scope, word) for scope in scopes for word in distinct]


def any_of(found: list[str]) -> str:
    """An FTS5 query matching any of the tokens `found`. Tokens are hex: quoted, none can be read
    as an FTS5 operator."""
    return " OR ".join(f'"{t}"' for t in found)


def query(index_key: bytes, scopes: list[str], text: str) -> str | None:
    """An FTS5 query matching any searched word of `text` in any of `scopes` (None: no word to search)."""
    found = query_tokens(index_key, scopes, text)
    return any_of(found) if found else None
