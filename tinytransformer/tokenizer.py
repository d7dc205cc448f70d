# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/07-tokens.md
"""Tokenizers: characters, byte-level BPE trained from scratch, and tiktoken's encodings
(chapter 7)."""

import base64
import heapq
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import regex
import tiktoken


@runtime_checkable
class Tokenizer(Protocol):
    """Text to token ids and back, plus a plain-data description that rebuilds the
    tokenizer.

    Attributes:
        name: The spec that builds it: ``"char"``, ``"bpe:1024"``, ``"p50k_base"``, ….
        vocab_size: Number of token ids ``V``; every id is in ``[0, V)``.
        eot_id: Id of the end-of-text token, or ``None`` if the vocabulary has none.
    """

    name: str
    vocab_size: int
    eot_id: int | None

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, so that ``decode(encode(text)) == text``."""

    def to_dict(self) -> dict:
        """Plain data (str, int, list, dict) from which `tokenizer_from_dict` rebuilds
        this tokenizer."""


class CharTokenizer:
    """One token per character; the vocabulary is the distinct characters of a corpus.

    Args:
        chars: Text whose distinct characters form the vocabulary (sorted by code
            point).

    Raises:
        ValueError: If ``chars`` is empty.
    """

    name = "char"
    eot_id: int | None = None

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise ValueError(
                "a char tokenizer needs a non-empty text to take its characters from"
            )
        self.vocab_size = len(self.chars)
        self.ids = {char: i for i, char in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        """The ids of the characters of ``text``.

        Raises:
            ValueError: If ``text`` has a character the vocabulary lacks (named, with
                its position).
        """
        try:
            return [self.ids[char] for char in text]
        except KeyError as error:
            char = error.args[0]
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {text.index(char)}"
                f" is not among the {self.vocab_size} characters this char tokenizer"
                " was built from; use a byte-level tokenizer (bpe or p50k_base) to"
                " encode any text"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``.

        Raises:
            ValueError: If an id is outside ``[0, vocab_size)``.
        """
        return "".join(self.chars[i] for i in _checked_ids(ids, self.vocab_size))

    def to_dict(self) -> dict:
        """``{"kind": "char", "name": "char", "chars": ...}``: the vocabulary is the
        whole description."""
        return {"kind": "char", "name": self.name, "chars": self.chars}


def _checked_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    ids = [int(i) for i in ids]  # also accepts NumPy integers and tensor.tolist()
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})"
        )
    return ids


GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
"""GPT-2's pre-tokenisation regex (`\\p{L}`: any letter, `\\p{N}`: any numeral, in any
script)."""


def count_chunks(text: str | Iterable[str], pattern: str = GPT2_PATTERN) -> Counter:
    """Split text into pre-tokenisation chunks and count each distinct chunk.

    Args:
        text: The corpus, as one string or as an iterable of pieces (each split on its
            own).
        pattern: The pre-tokenisation regex (syntax of the ``regex`` package).

    Returns:
        How often each chunk occurs, in order of first occurrence.
    """
    compiled = regex.compile(pattern)
    counts: Counter = Counter()
    for piece in [text] if isinstance(text, str) else text:
        counts.update(compiled.findall(piece))
    return counts


def _merge_pair(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``word`` with every occurrence of ``pair``, left to right, replaced by
    ``new_id``."""
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


def _apply_merge(pair, new_id, words, freqs, pair_counts, where) -> set:
    """Merge ``pair`` in every word that holds it, updating the counts; return the pairs
    that changed."""
    changed = set()
    for i in where.pop(pair):
        word, freq = words[i], freqs[i]
        merged = _merge_pair(word, pair, new_id)
        if len(merged) == len(word):
            # the index was stale: an earlier merge already took this pair apart
            continue
        for old in zip(word, word[1:]):
            pair_counts[old] -= freq
            changed.add(old)
        for new in zip(merged, merged[1:]):
            pair_counts[new] += freq
            where[new].add(i)
            changed.add(new)
        words[i] = merged
    return changed


def train_bpe(
    text: str | Iterable[str], vocab_size: int, pattern: str = GPT2_PATTERN
) -> dict[bytes, int]:
    """Learn byte-level BPE merges from a corpus.

    Args:
        text: The corpus, one string or an iterable of pieces.
        vocab_size: Largest vocabulary to learn, counting the 256 single bytes.
        pattern: Pre-tokenisation regex; merges never cross its chunks.

    Returns:
        The ranks: each token's bytes mapped to its id, single bytes first, then merges
        in order.

    Raises:
        ValueError: If ``vocab_size`` is below 256.
    """
    if vocab_size < 256:
        raise ValueError(
            f"vocab_size must be at least 256 (the single bytes), got {vocab_size}"
        )
    chunk_counts = count_chunks(text, pattern)
    # each distinct chunk as byte ids
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    pair_counts: Counter[tuple[int, int]] = Counter()  # pair -> count
    # pair -> indices of the words that hold it
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    vocab = [bytes([b]) for b in range(256)]  # id -> bytes
    ranks = {token: i for i, token in enumerate(vocab)}
    while len(vocab) < vocab_size and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -negative_count:
            continue  # stale heap entry
        if -negative_count < 2:
            break
        token = vocab[pair[0]] + vocab[pair[1]]
        new_id = ranks.setdefault(token, len(vocab))
        if new_id == len(vocab):
            vocab.append(token)
        for changed in _apply_merge(pair, new_id, words, freqs, pair_counts, where):
            if pair_counts[changed] > 0:
                heapq.heappush(heap, (-pair_counts[changed], changed))
            else:
                del pair_counts[changed]
    return ranks


def ranks_to_text(ranks: dict[bytes, int]) -> str:
    """Ranks in tiktoken's ``.tiktoken`` format: ``<base64 of the token's bytes>
    <rank>`` per line."""
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    return "".join(
        f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ordered
    )


def ranks_from_text(text: str) -> dict[bytes, int]:
    """Parse ranks in tiktoken's ``.tiktoken`` format.

    Raises:
        ValueError: If a line is not ``<base64> <integer>``.
    """
    ranks = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line:
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            # wrong field count, bad base64 (binascii.Error) or a bad integer
            except ValueError:
                raise ValueError(
                    f"line {number} of the ranks is not '<base64> <rank>':"
                    f" {line[:60]!r}"
                ) from None
    return ranks


def check_ranks(ranks: dict[bytes, int], pattern: str) -> None:
    """Refuse ranks or a pattern that tiktoken would fail on, some by panicking (an
    error no handler catches).

    Raises:
        ValueError: If the pattern is empty or not a regex, a single byte has no token,
            or the ids are not ``0 .. n-1``, each once.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(
            "the pre-tokenisation pattern is empty; a BPE tokenizer needs the regex it"
            " was trained with"
        )
    try:
        regex.compile(pattern)
    except regex.error as error:
        raise ValueError(
            f"the pre-tokenisation pattern is not a valid regex: {error}"
        ) from None
    missing = [byte for byte in range(256) if bytes([byte]) not in ranks]
    if missing:
        raise ValueError(
            f"the ranks lack {len(missing)} of the 256 single bytes (first:"
            f" {bytes(missing[:1])!r}); byte-level BPE needs a token for every byte"
        )
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(
            f"the ranks' ids are not 0 to {len(ranks) - 1}, each once: duplicated or"
            " missing ids"
        )


EOT = "<|endoftext|>"


class TiktokenTokenizer:
    """Any ``tiktoken.Encoding`` behind the
    [`Tokenizer`][tinytransformer.tokenizer.Tokenizer] interface.

    Args:
        encoding: The tiktoken encoding.
        name: The spec that rebuilds it (a tiktoken encoding name such as
            ``"p50k_base"``).
    """

    def __init__(self, encoding: tiktoken.Encoding, name: str):
        self.encoding = encoding
        self.name = name
        self.vocab_size = encoding.n_vocab
        self.eot_id = (
            encoding.encode_single_token(EOT)
            if EOT in encoding.special_tokens_set
            else None
        )

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``; special-token strings in it are encoded as
        ordinary text."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; a character cut in half by the ids' ends decodes as
        U+FFFD.

        Raises:
            ValueError: If an id is outside ``[0, vocab_size)``.
        """
        return self.encoding.decode(_checked_ids(ids, self.vocab_size))

    def to_dict(self) -> dict:
        """``{"kind": "tiktoken", "name": ...}``: tiktoken rebuilds it from the name."""
        return {"kind": "tiktoken", "name": self.name}


class BPETokenizer(TiktokenTokenizer):
    """Byte-level BPE with trained ranks, encoding through tiktoken.

    Args:
        ranks: Token bytes to id, as returned by
            [`train_bpe`][tinytransformer.tokenizer.train_bpe].
        name: The spec, e.g. ``"bpe:1024"``; by default ``"bpe:<number of ranks>"``.
        pattern: The pre-tokenisation regex the ranks were trained with.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        name: str | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        check_ranks(ranks, pattern)
        name = name or f"bpe:{len(ranks)}"
        super().__init__(
            tiktoken.Encoding(
                name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
            ),
            name,
        )
        self.ranks, self.pattern = ranks, pattern

    def to_dict(self) -> dict:
        """``{"kind": "bpe", "name", "pattern", "ranks"}``, the ranks in tiktoken's text
        format."""
        return {
            "kind": "bpe",
            "name": self.name,
            "pattern": self.pattern,
            "ranks": ranks_to_text(self.ranks),
        }


def load_encoding(name: str) -> tiktoken.Encoding:
    """A pretrained tiktoken encoding, with a useful error when it cannot be had.

    Args:
        name: A tiktoken encoding name, e.g. ``"p50k_base"``.

    Returns:
        The encoding (downloaded on first use, then read from tiktoken's cache).

    Raises:
        ValueError: If the name is unknown, or the encoding is neither cached nor
            downloadable.
    """
    if name not in tiktoken.list_encoding_names():
        raise ValueError(_unknown_tokenizer(name))
    try:
        return tiktoken.get_encoding(name)
    # no network, no cache, a corrupted download: tiktoken raises many kinds
    except Exception as error:
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or "unset, so a temporary folder"
        raise ValueError(
            f"cannot load the tiktoken encoding {name!r} ({type(error).__name__}:"
            f" {str(error)[:120]}). tiktoken downloads it on first use into"
            f" TIKTOKEN_CACHE_DIR (now {cache}): connect to the internet once, or set"
            f" TIKTOKEN_CACHE_DIR to a folder that holds {name}. Offline alternatives,"
            " trained on your corpus: --tokenizer char or --tokenizer bpe"
        ) from error


def _unknown_tokenizer(spec: str) -> str:
    encodings = ", ".join(tiktoken.list_encoding_names())
    return (
        f"unknown tokenizer {spec!r}; choose char, bpe, bpe:VOCAB_SIZE (e.g. bpe:4096),"
        f" or a tiktoken encoding: {encodings}"
    )


DEFAULT_BPE_VOCAB_SIZE = 1024
"""The vocabulary size that ``bpe`` without a size means."""
DEFAULT_TOKENIZER = f"bpe:{DEFAULT_BPE_VOCAB_SIZE}"
"""The tokenizer used when none is named: byte-level BPE with 1,024 tokens, trained on
the corpus."""


def tokenizer_name(spec: str) -> str:
    """Check a tokenizer spec and return the name of the tokenizer it builds (``"bpe"``
    → ``"bpe:1024"``).

    Raises:
        ValueError: If the spec is unknown (the message lists the valid ones).
    """
    kind, colon, size = spec.partition(":")
    if spec == "char" or spec in tiktoken.list_encoding_names():
        return spec
    if kind != "bpe":
        raise ValueError(_unknown_tokenizer(spec))
    if not colon:
        return DEFAULT_TOKENIZER
    if not size.isdigit() or int(size) < 256:
        raise ValueError(
            f"the vocabulary size in {spec!r} must be an integer of at least 256 (the"
            " single bytes)"
        )
    return f"bpe:{int(size)}"


def trains_on_corpus(spec: str) -> bool:
    """Whether the tokenizer ``spec`` names is built from the corpus (``char``,
    ``bpe``), not pretrained.

    Raises:
        ValueError: If the spec is unknown.
    """
    return tokenizer_name(spec).partition(":")[0] in ("char", "bpe")


def get_tokenizer(spec: str, text: str | Iterable[str] | None = None) -> Tokenizer:
    """Build a tokenizer from its spec.

    Args:
        spec: ``"char"``, ``"bpe"``, ``"bpe:VOCAB_SIZE"`` or a tiktoken encoding name.
        text: The corpus (a string or an iterable of pieces) that ``char`` and ``bpe``
            are built from.

    Returns:
        The tokenizer; its ``name`` is ``tokenizer_name(spec)``.

    Raises:
        ValueError: If the spec is unknown, the text is missing or empty, or a tiktoken
            encoding cannot be loaded.
    """
    name = tokenizer_name(spec)
    if not trains_on_corpus(name):
        return TiktokenTokenizer(load_encoding(name), name)
    if text is None:
        raise ValueError(f"the {name} tokenizer is built from a corpus: pass its text")
    if name == "char":
        chars: set[str] = set()
        for piece in [text] if isinstance(text, str) else text:
            chars.update(piece)
        return CharTokenizer("".join(chars))
    ranks = train_bpe(text, int(name.removeprefix("bpe:")))
    # the corpus ran out of pairs that occur twice
    if len(ranks) < int(name.removeprefix("bpe:")):
        print(
            f"the corpus supports only {len(ranks):,} BPE tokens, fewer than {name}"
            f" asks for; the tokenizer keeps the name {name} (what was asked for) with"
            f" a vocabulary of {len(ranks):,}",
            file=sys.stderr,
        )
    return BPETokenizer(ranks, name)


def tokenizer_from_dict(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` description (for example, from a
    checkpoint).

    Raises:
        ValueError: If the description is malformed, or names a tiktoken encoding that
            cannot be loaded.
    """
    try:
        kind, name = state["kind"], state["name"]
        if kind == "char":
            return CharTokenizer(state["chars"])
        if kind == "bpe":
            return BPETokenizer(ranks_from_text(state["ranks"]), name, state["pattern"])
        if kind == "tiktoken":
            return TiktokenTokenizer(load_encoding(name), name)
    except (KeyError, TypeError) as error:
        raise ValueError(
            "a tokenizer description needs 'kind', 'name' and its data; missing"
            f" {error}"
        ) from None
    raise ValueError(
        f"unknown tokenizer kind {kind!r}; expected 'char', 'bpe' or 'tiktoken'"
    )
