# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/07-tokens.md
"""Corpora, the token cache on disk, and training batches (chapter 7)."""

import contextlib
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import regex
import torch
from tqdm import tqdm

from tinytransformer.files import atomic_write, atomic_write_bytes
from tinytransformer.tokenizer import (
    DEFAULT_TOKENIZER,
    Tokenizer,
    get_tokenizer,
    tokenizer_from_dict,
    tokenizer_name,
    trains_on_corpus,
)


def default_cache_dir() -> Path:
    """Where downloads and token caches go: ``$TINYTRANSFORMER_CACHE``, else
    ``$XDG_CACHE_HOME/tinytransformer``, else ``~/.cache/tinytransformer``."""
    if os.environ.get("TINYTRANSFORMER_CACHE"):
        return Path(os.environ["TINYTRANSFORMER_CACHE"]).expanduser()
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "tinytransformer"
    )


def book_chapters() -> list[Path]:
    """The Markdown files of this book, in order: shipped in the package, or beside it
    in a clone.

    Raises:
        FileNotFoundError: If neither place has them (a broken installation).
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "book", package.parent / "book"):
        chapters = sorted(folder.glob("*.md"))
        if chapters:
            return chapters
    raise FileNotFoundError(
        f"the embedded corpus (the book's chapters) is missing from {package}; "
        "reinstall tinytransformer, or pass --data PATH"
    )


@dataclass(frozen=True)
class Download:
    """A corpus fetched from the internet once and cached.

    Attributes:
        url: Where to fetch it.
        sha256: The SHA-256 the file must have.
        filename: Its name in ``<cache>/corpora/``.
    """

    url: str
    sha256: str
    filename: str


DOWNLOADS = {
    "shakespeare": Download(
        url=(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
            "tinyshakespeare/input.txt"
        ),
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, cache_dir: Path) -> Path:
    """The cached file of a named corpus, downloading and verifying it first if needed.

    Raises:
        ValueError: If the download fails or its checksum is wrong (nothing is kept in
            either case).
    """
    spec = DOWNLOADS[name]
    target = cache_dir / "corpora" / spec.filename
    if target.is_file() and _sha256(target) == spec.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {name} from {spec.url}", file=sys.stderr)

    def fetch_and_verify(file: BinaryIO) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(spec.url, timeout=60) as response:
            while block := response.read(1 << 16):
                file.write(block)
                digest.update(block)
        # raising here keeps nothing: atomic_write removes the file
        if digest.hexdigest() != spec.sha256:
            raise ValueError(
                f"checksum mismatch for {name} from {spec.url}: expected sha256"
                f" {spec.sha256}, got {digest.hexdigest()}; nothing was kept. Try again"
                " later, or download it yourself and pass --data PATH"
            )

    try:
        atomic_write(target, fetch_and_verify)
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
        raise ValueError(
            f"could not download {name} from {spec.url} ({error}); check the"
            " connection, or download the file yourself and pass --data PATH"
        ) from error
    return target


def corpus_documents(
    data: str | None, cache_dir: Path | None = None
) -> tuple[str, list[Path]]:
    """Resolve a ``--data`` value into a description and the files to read, in order.

    Args:
        data: ``None`` or ``"book"`` (this book), ``"shakespeare"``, a UTF-8 file, or a
            folder.
        cache_dir: Where downloads go; default
            [`default_cache_dir`][tinytransformer.data.default_cache_dir].

    Returns:
        ``(source, files)``: ``source`` can be passed back as ``data`` to read the same
        corpus.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If a folder has no ``.txt``/``.md`` files, or a download fails.
    """
    if data is None or data == "book":
        return "book", book_chapters()
    if data in DOWNLOADS:
        return data, [download(data, cache_dir or default_cache_dir())]
    path = Path(data).expanduser().resolve()
    if path.is_file():
        return str(path), [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix in (".txt", ".md") and p.is_file()
        )
        if not files:
            raise ValueError(
                f"the folder {path} has no .txt or .md files; pass a folder of text"
                " files or a file"
            )
        return str(path), files
    if path.exists():  # a pipe, a device such as /dev/null, a socket
        raise ValueError(
            f"{path} is not a regular file or folder; pass a UTF-8 text file or a"
            " folder of them"
        )
    raise FileNotFoundError(
        f"no file or folder {data!r}; pass a UTF-8 text file, a folder of .txt/.md"
        f" files, or a named corpus: book, {', '.join(DOWNLOADS)}"
    )


def _decode_utf8(
    path: Path, block_size: int, progress: tqdm | None = None
) -> Iterator[str]:
    """Yield the text of a UTF-8 file block by block; name the place of the first
    invalid byte."""
    pending, offset, line = b"", 0, 1
    with path.open("rb") as file:
        while True:
            block = file.read(block_size)
            if progress is not None:
                progress.update(len(block))
            data = pending + block
            if not data:
                return
            try:
                text, pending = data.decode("utf-8"), b""
            except UnicodeDecodeError as error:
                # a character cut by the block end
                if block and error.reason == "unexpected end of data":
                    text, pending = (
                        data[: error.start].decode("utf-8"),
                        data[error.start :],
                    )
                else:
                    line += data[: error.start].count(b"\n")
                    raise ValueError(
                        f"{path} is not UTF-8 text: invalid byte"
                        f" 0x{data[error.start]:02x} at byte offset"
                        f" {offset + error.start:,} (line {line}); convert it, e.g."
                        " iconv -f latin1 -t utf-8 IN > OUT"
                    ) from None
            offset += len(data) - len(pending)
            line += text.count("\n")
            yield text


DOCUMENT_SEPARATOR = "\n\n"
SAFE_CUT = regex.compile(r"(?<=\S)(?= \p{L})|(?<=\S\n)(?=\S)", flags=regex.REVERSE)


def iter_text(
    files: list[Path], block_size: int = 1 << 20, progress: tqdm | None = None
) -> Iterator[str]:
    """The text of a corpus as pieces that tokenize exactly like the whole.

    Args:
        files: The corpus's files, read in order and separated by a blank line.
        block_size: Bytes read at a time; pieces are about this long.
        progress: A progress bar to advance by the bytes read.

    Yields:
        Pieces of text, each ending where a pre-tokenisation chunk ends (see
        ``SAFE_CUT``) or at the end of a file.

    Raises:
        ValueError: If a file is not valid UTF-8 (the message says where).
    """
    for index, path in enumerate(files):
        if index:
            yield DOCUMENT_SEPARATOR
        carry = ""
        for text in _decode_utf8(path, block_size, progress):
            text = carry + text
            match = SAFE_CUT.search(text)  # the last safe place
            # 0: no safe place yet, everything waits
            cut = match.start() if match else 0
            if cut:
                yield text[:cut]
            carry = text[cut:]
        if carry:
            yield carry


def corpus_text(data: str | None = None, cache_dir: Path | None = None) -> str:
    """A whole corpus as one string (for small corpora and experiments; see
    `load_token_data`)."""
    return "".join(iter_text(corpus_documents(data, cache_dir)[1]))


@dataclass
class TokenData:
    """A tokenized corpus, split into training and validation tokens.

    Attributes:
        train: 1-D token ids (a read-only ``np.memmap`` of the cache file), the first
            part of the corpus.
        val: 1-D token ids, the rest.
        tokenizer: The tokenizer that produced them.
        source: The corpus: ``"book"``, ``"shakespeare"`` or an absolute path;
            ``load_token_data`` accepts it.
        n_chars: Characters of text the tokens encode (to compare losses per character
            across tokenizers).
        corpus_sha256: The SHA-256 of the corpus's bytes: the same value means the same
            text.
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    source: str
    n_chars: int = 0
    corpus_sha256: str = ""


CACHE_FORMAT = 3


def _corpus_digest(files: list[Path]) -> tuple[str, int]:
    """The SHA-256 of the corpus (of its files' SHA-256s, in order) and its size in
    bytes."""
    file_digests = "\n".join(_sha256(path) for path in files)
    return hashlib.sha256(file_digests.encode()).hexdigest(), sum(
        path.stat().st_size for path in files
    )


def _cache_key(corpus_sha256: str, tokenizer: str | Tokenizer) -> str:
    """A hash of the corpus and the tokenizer: the name of their token cache."""
    digest = hashlib.sha256(
        f"tinytransformer tokens {CACHE_FORMAT}\n{corpus_sha256}\n".encode()
    )
    if isinstance(tokenizer, str):
        digest.update(f"spec {tokenizer_name(tokenizer)}".encode())
    else:  # a tokenizer object, e.g. from a checkpoint: its whole description
        digest.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _read_cache(folder: Path, key: str) -> dict | None:
    """The description of a finished token cache; ``None`` if there is none, or it is
    damaged (then removed).

    A kill while tokenizing leaves temporary files: those more than an hour old are
    removed here too.
    """
    for stale in folder.glob(".*.tmp"):  # atomic_write's temporary files
        with contextlib.suppress(OSError):  # another process may remove it first
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
    description, tokens = folder / f"{key}.json", folder / f"{key}.bin"
    if not (description.is_file() and tokens.is_file()):
        return None
    try:
        meta = json.loads(description.read_text(encoding="utf-8"))
        expected_bytes = meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize
    except (ValueError, KeyError, TypeError):
        expected_bytes = None
    if expected_bytes != tokens.stat().st_size:
        print(
            f"the token cache {tokens} is damaged; building it again", file=sys.stderr
        )
        description.unlink(missing_ok=True)
        tokens.unlink(missing_ok=True)
        return None
    return meta


def _bar(total: int, description: str) -> tqdm:
    """A progress bar over the corpus's bytes, on standard error, shown only in a
    terminal."""
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=description,
        disable=None,
        leave=False,
    )


def _build_cache(
    files: list[Path], tokenizer: str | Tokenizer, key: str, folder: Path, size: int
) -> None:
    """Train the tokenizer if needed, then tokenize the corpus into ``<key>.bin`` and
    ``<key>.json``."""
    if isinstance(tokenizer, str):
        trained = trains_on_corpus(tokenizer)
        with _bar(size if trained else 0, f"training {tokenizer}") as bar:
            tokenizer = get_tokenizer(
                tokenizer, iter_text(files, progress=bar) if trained else None
            )
    start = time.perf_counter()
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    counts = {"n_tokens": 0, "n_chars": 0}

    def write_tokens(file) -> None:
        with _bar(size, f"tokenizing ({tokenizer.name})") as bar:
            for piece in iter_text(files, progress=bar):
                ids = np.asarray(tokenizer.encode(piece), dtype=dtype)
                ids.tofile(file)
                counts["n_tokens"] += len(ids)
                counts["n_chars"] += len(piece)

    atomic_write(folder / f"{key}.bin", write_tokens)
    meta = {
        "format": CACHE_FORMAT,
        "tokenizer": tokenizer.to_dict(),
        "dtype": np.dtype(dtype).name,
        **counts,
    }
    atomic_write_bytes(folder / f"{key}.json", json.dumps(meta).encode())
    seconds = max(time.perf_counter() - start, 1e-6)
    print(
        f"tokenized {size:,} bytes into {counts['n_tokens']:,} tokens"
        f" ({tokenizer.name}) in {seconds:.2f} s ({size / 1e6 / seconds:.1f} MB/s);"
        f" cached in {folder}",
        file=sys.stderr,
    )


def load_token_data(
    data: str | None = None,
    tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
    val_fraction: float = 0.1,
    cache_dir: Path | None = None,
) -> TokenData:
    """Tokenize a corpus once (cached on disk) and split it into training and validation
    tokens.

    Args:
        data: The corpus: ``None`` or ``"book"``, ``"shakespeare"``, a UTF-8 file, or a
            folder.
        tokenizer: A spec (``"char"``, ``"bpe:1024"``, ``"p50k_base"``, …) or a
            tokenizer object.
        val_fraction: Share of the tokens, at the end of the corpus, kept for
            validation.
        cache_dir: Cache folder; default
            [`default_cache_dir`][tinytransformer.data.default_cache_dir].

    Returns:
        The [`TokenData`][tinytransformer.data.TokenData], its arrays mapped from the
        cache file.

    Raises:
        FileNotFoundError: If the corpus does not exist.
        ValueError: For an empty corpus, text that is not UTF-8, an unknown tokenizer, a
            failed download, a ``val_fraction`` outside (0, 1), or too few tokens to
            split.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source, files = corpus_documents(data, cache_dir)
    corpus_sha256, size = _corpus_digest(files)
    key = _cache_key(corpus_sha256, tokenizer)
    if size == 0:
        raise ValueError(
            f"the corpus {source} is empty; pass a file with some text in it"
        )
    folder = cache_dir / "tokens"
    folder.mkdir(parents=True, exist_ok=True)
    meta = _read_cache(folder, key)
    if meta is None:
        _build_cache(files, tokenizer, key, folder, size)
        meta = _read_cache(folder, key)
        assert meta is not None, f"the token cache {folder / key}.bin was not written"
    if isinstance(tokenizer, str):
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
    tokens = np.memmap(
        folder / f"{key}.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],)
    )
    n_val = int(len(tokens) * val_fraction)
    if n_val < 2 or len(tokens) - n_val < 2:
        raise ValueError(
            f"the corpus {source} is only {len(tokens)} tokens long with"
            f" {tokenizer.name}; a {val_fraction:.0%} validation split needs at least 2"
            " tokens on each side"
        )
    return TokenData(
        tokens[:-n_val],
        tokens[-n_val:],
        tokenizer,
        source,
        meta["n_chars"],
        corpus_sha256,
    )


def get_batch(
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``seq_len + 1`` tokens, as inputs and next-token targets.

    Args:
        tokens: 1-D token ids, e.g. ``TokenData.train`` (a memory map is read only where
            sampled).
        batch_size: Number of windows, ``B``.
        seq_len: Tokens per input sequence, ``T``.
        generator: Random generator for the start positions (CPU).
        device: Where the batch goes.

    Returns:
        ``(x, y)``, both ``(B, T)`` int64, with ``y[:, t] == x[:, t + 1]`` for ``t < T -
        1``.

    Raises:
        ValueError: If ``tokens`` holds fewer than ``seq_len + 1`` tokens.
    """
    if len(tokens) < seq_len + 1:
        raise ValueError(
            f"only {len(tokens):,} tokens, but one window needs seq_len + 1 ="
            f" {seq_len + 1:,}; use a longer corpus or a shorter sequence length"
        )
    starts = torch.randint(len(tokens) - seq_len, (batch_size,), generator=generator)
    # (N - T, T + 1), no copy
    windows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)
    # (B, T + 1): the only copies
    batch = torch.from_numpy(windows[starts.numpy()].astype(np.int64))
    x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()  # (B, T) each
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
            device, non_blocking=True
        )
    return x.to(device), y.to(device)
