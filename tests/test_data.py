"""Corpora, downloads, the token cache and batches."""

import argparse
import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tinytransformer.data as data_module
from tinytransformer.commands.options import add_data_arguments
from tinytransformer.data import (
    DOWNLOADS,
    TokenData,
    book_chapters,
    corpus_documents,
    corpus_text,
    default_cache_dir,
    get_batch,
    iter_text,
    load_token_data,
)
from tinytransformer.tokenizer import CharTokenizer, get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# What the download tests serve from 127.0.0.1 in place of tiny Shakespeare (no network needed).
STAND_IN = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 200
STAND_IN_SHA256 = hashlib.sha256(STAND_IN.encode()).hexdigest()
TEXT = "Ünïcödé text 🙂 with\n\n  whitespace   runs\tand lines.\n" * 40


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def all_tokens(data: TokenData) -> np.ndarray:
    return np.concatenate([data.train, data.val])


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "tokens").iterdir()) if (cache / "tokens").exists() else []


# The cache folder


def test_cache_dir_prefers_tinytransformer_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYTRANSFORMER_CACHE", str(tmp_path / "tt"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "tt"
    monkeypatch.delenv("TINYTRANSFORMER_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "tinytransformer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tinytransformer"


# Corpora


def test_embedded_corpus_is_the_books_markdown_files():
    assert [p.name for p in book_chapters()] == sorted(p.name for p in (ROOT / "book").glob("*.md"))
    source, files = corpus_documents(None)
    assert source == "book" and corpus_documents("book") == (source, files)
    text = corpus_text()
    assert text.startswith((ROOT / "book" / files[0].name).read_text(encoding="utf-8")[:100])
    assert "# 7. From text to tokens" in text


def test_installed_package_reads_the_chapters_shipped_inside_it(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "tinytransformer"
    (package / "book").mkdir(parents=True)
    (package / "book" / "02-b.md").write_text("second", encoding="utf-8")
    (package / "book" / "01-a.md").write_text("first", encoding="utf-8")
    (package / "book" / "conftest.py").write_text("", encoding="utf-8")
    monkeypatch.setattr(data_module, "__file__", str(package / "data.py"))
    assert [p.name for p in book_chapters()] == ["01-a.md", "02-b.md"]
    assert corpus_text() == "first\n\nsecond"


def test_missing_embedded_corpus_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "__file__", str(tmp_path / "tinytransformer" / "data.py"))
    with pytest.raises(FileNotFoundError, match="embedded corpus .* is missing"):
        book_chapters()


def test_a_folder_corpus_reads_its_txt_and_md_files_recursively_in_order(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("bee", encoding="utf-8")
    (folder / "a.txt").write_text("ant", encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("cat", encoding="utf-8")
    (folder / "skip.py").write_text("dog", encoding="utf-8")
    source, files = corpus_documents(str(folder))
    assert source == str(folder.resolve())
    assert corpus_text(str(folder)) == "ant\n\nbee\n\ncat"


def test_missing_path_names_it_and_the_named_corpora(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file or folder '.*nope.txt'.*book, shakespeare"):
        load_token_data(str(tmp_path / "nope.txt"), "char", cache_dir=tmp_path / "cache")


def test_folder_without_text_files_is_refused(tmp_path):
    (tmp_path / "code.py").write_text("x = 1", encoding="utf-8")
    with pytest.raises(ValueError, match="no .txt or .md files"):
        corpus_documents(str(tmp_path))


def test_empty_corpus_is_refused_and_leaves_no_cache(tmp_path, cache):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"corpus .*empty.txt is empty"):
        load_token_data(str(tmp_path / "empty.txt"), "char", cache_dir=cache)
    assert cache_files(cache) == []


# Reading text


def test_text_that_is_not_utf8_names_the_byte_and_line(tmp_path, cache):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond: caf\xe9\n".encode("latin-1"))
    message = r"latin1.txt is not UTF-8 text: invalid byte 0xe9 at byte offset 22 \(line 2\); convert"
    with pytest.raises(ValueError, match=message):
        load_token_data(str(path), "char", cache_dir=cache)
    assert cache_files(cache) == []


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 7, 1 << 20])
def test_invalid_byte_is_located_whatever_the_block_size(tmp_path, block_size):
    path = tmp_path / "bad.txt"
    path.write_bytes("ok 🙂\nstill ok é\nbad ".encode() + b"\xff" + b" tail")
    with pytest.raises(ValueError, match=r"0xff at byte offset 24 \(line 3\)"):
        list(iter_text([path], block_size=block_size))


def test_file_ending_inside_a_character_is_not_utf8(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("emoji 🙂".encode()[:-1])
    with pytest.raises(ValueError, match=r"invalid byte 0xf0 at byte offset 6 \(line 1\)"):
        list(iter_text([path], block_size=4))


@pytest.mark.parametrize("block_size", [1, 3, 16, 100, 1 << 20])
def test_pieces_join_to_the_text_whatever_the_block_size(text_file, block_size):
    pieces = list(iter_text([text_file], block_size=block_size))
    assert "".join(pieces) == TEXT
    for piece, following in zip(pieces, pieces[1:]):  # a cut before " <letter>" or after "<non-space>\n"
        assert (
            not piece[-1].isspace()
            and following[0] == " "
            and following[1].isalpha()
            or (piece[-1] == "\n" and not piece[-2].isspace() and not following[0].isspace())
        )


WINDOWS_AND_CHINESE = "Line one.\r\nLine  two\r\n\r\n  indented\r\n" * 30 + "第一行。\n第二行，没有空格。\n" * 40


PRETRAINED = [pytest.param(name, marks=pytest.mark.pretrained_encodings) for name in ("r50k_base", "p50k_base")]


@pytest.mark.parametrize("spec", ["char", "bpe:600", *PRETRAINED])
def test_tokenizing_piece_by_piece_equals_tokenizing_the_whole_text(tmp_path, spec):
    text = corpus_text()[:60_000] + "\n  odd   spacing\n\n\n  here\n" + TEXT
    text += WINDOWS_AND_CHINESE + "x" + "end's 'quoted' 12 34\t\tword\u00a0nbsp."
    path = tmp_path / "sample.txt"
    path.write_text(text, encoding="utf-8")
    tokenizer = get_tokenizer(spec, text)
    pieces = list(iter_text([path], block_size=97))
    assert len(pieces) > 500 and max(map(len, pieces)) < 400  # pieces of about block_size, never the whole text
    assert [i for piece in pieces for i in tokenizer.encode(piece)] == tokenizer.encode(text)


# The token cache


@pytest.mark.parametrize("spec", ["char", "bpe:300", *PRETRAINED[1:]])
def test_tokens_round_trip_to_the_corpus_text(text_file, cache, spec):
    data = load_token_data(str(text_file), spec, cache_dir=cache)
    assert data.tokenizer.decode(all_tokens(data).tolist()) == TEXT
    assert data.source == str(text_file.resolve()) and data.n_chars == len(TEXT)
    assert data.tokenizer.name == spec


def test_tokens_are_a_contiguous_90_10_split_of_a_memmap(text_file, cache):
    data = load_token_data(str(text_file), "char", cache_dir=cache)
    n = len(data.train) + len(data.val)
    assert isinstance(data.train, np.memmap) and isinstance(data.val, np.memmap)
    assert data.train.dtype == np.uint16 and data.train.ndim == 1
    assert len(data.val) == int(n * 0.1)
    assert np.array_equal(all_tokens(data), data.tokenizer.encode(TEXT))
    assert not data.train.flags.writeable


def test_val_fraction_must_be_between_0_and_1(text_file, cache):
    for fraction in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
            load_token_data(str(text_file), "char", val_fraction=fraction, cache_dir=cache)
    data = load_token_data(str(text_file), "char", val_fraction=0.25, cache_dir=cache)
    assert len(data.val) == int((len(data.train) + len(data.val)) * 0.25)


def test_the_cache_is_reused_without_training_or_tokenizing_again(text_file, cache, monkeypatch):
    first = load_token_data(str(text_file), "bpe:300", cache_dir=cache)
    files = cache_files(cache)
    assert len(files) == 2 and {Path(name).suffix for name in files} == {".bin", ".json"}

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "get_tokenizer", fail)
    monkeypatch.setattr(data_module, "iter_text", fail)
    second = load_token_data(str(text_file), "bpe:300", cache_dir=cache)
    assert np.array_equal(all_tokens(first), all_tokens(second))
    assert second.tokenizer.to_dict() == first.tokenizer.to_dict()
    assert len(cache_files(cache)) == 2


def test_the_cache_follows_the_content_and_the_tokenizer_not_the_file_name(text_file, cache, tmp_path):
    load_token_data(str(text_file), "char", cache_dir=cache)
    renamed = tmp_path / "renamed.txt"
    renamed.write_bytes(text_file.read_bytes())
    load_token_data(str(renamed), "char", cache_dir=cache)
    assert len(cache_files(cache)) == 2
    load_token_data(str(renamed), "bpe:300", cache_dir=cache)
    assert len(cache_files(cache)) == 4
    renamed.write_text(TEXT + "more", encoding="utf-8")
    assert len(all_tokens(load_token_data(str(renamed), "char", cache_dir=cache))) == len(TEXT) + 4
    assert len(cache_files(cache)) == 6


def test_source_can_be_passed_back_to_read_the_same_corpus(text_file, cache):
    data = load_token_data(str(text_file), "char", cache_dir=cache)
    again = load_token_data(data.source, "char", cache_dir=cache)
    assert np.array_equal(all_tokens(data), all_tokens(again)) and len(cache_files(cache)) == 2


def test_a_tokenizer_object_is_used_as_it_is(text_file, cache):
    tokenizer = get_tokenizer("char", TEXT + "XYZ")  # e.g. rebuilt from a checkpoint: a larger vocabulary
    data = load_token_data(str(text_file), tokenizer, cache_dir=cache)
    assert data.tokenizer is tokenizer
    assert data.tokenizer.decode(all_tokens(data).tolist()) == TEXT
    assert len(cache_files(cache)) == 2


def test_a_tokenizer_that_cannot_encode_the_corpus_fails_and_leaves_no_cache(text_file, cache):
    with pytest.raises(ValueError, match=r"character 'Ü' \(U\+00DC\)"):
        load_token_data(str(text_file), CharTokenizer("abc"), cache_dir=cache)
    assert cache_files(cache) == []


def test_unknown_tokenizer_is_refused_before_reading(text_file, cache):
    with pytest.raises(ValueError, match="unknown tokenizer 'p51k'"):
        load_token_data(str(text_file), "p51k", cache_dir=cache)
    assert cache_files(cache) == []


def test_a_corpus_too_short_to_split_says_how_long_it_is(tmp_path, cache):
    (tmp_path / "short.txt").write_text("abcdefghij", encoding="utf-8")
    with pytest.raises(ValueError, match=r"only 10 tokens long with char; a 10% validation split needs at least 2"):
        load_token_data(str(tmp_path / "short.txt"), "char", cache_dir=cache)


def test_the_embedded_corpus_loads_with_the_default_tokenizer(cache):
    data = load_token_data(cache_dir=cache)
    assert data.source == "book" and data.tokenizer.name == "bpe:1024"
    assert len(data.train) > 10_000 and data.n_chars > 2 * (len(data.train) + len(data.val))


# Downloads (from a server on 127.0.0.1, never the internet)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Start a static file server on 127.0.0.1 for a folder; returns its base URL."""
    servers = []

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def use_url(monkeypatch, url: str, sha256: str = STAND_IN_SHA256) -> None:
    download = dataclasses.replace(DOWNLOADS["shakespeare"], url=url, sha256=sha256)
    monkeypatch.setitem(DOWNLOADS, "shakespeare", download)


@pytest.fixture
def stand_in_site(tmp_path) -> Path:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "input.txt").write_text(STAND_IN, encoding="utf-8")
    return tmp_path / "site"


def test_the_shakespeare_address_and_checksum_are_the_published_ones():
    assert DOWNLOADS["shakespeare"].sha256 == SHAKESPEARE_SHA256
    assert DOWNLOADS["shakespeare"].url.endswith("/tinyshakespeare/input.txt")


def test_the_real_tiny_shakespeare_matches_the_checksum():
    """The file a reader's first ``--data shakespeare`` downloaded (``.ci/run`` puts one in its cache)."""
    cached = default_cache_dir() / "corpora" / DOWNLOADS["shakespeare"].filename
    if not cached.is_file():
        pytest.skip(
            f"tiny Shakespeare is not in the cache ({cached}): run `tinytransformer train --data "
            "shakespeare` once with a network, or set TINYTRANSFORMER_CACHE to a folder whose "
            "corpora/ holds tinyshakespeare.txt"
        )
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert len(cached.read_bytes()) == 1_115_394


def test_shakespeare_is_downloaded_once_verified_and_cached(serve, monkeypatch, cache, stand_in_site):
    use_url(monkeypatch, f"{serve(stand_in_site)}/input.txt")
    data = load_token_data("shakespeare", "char", cache_dir=cache)
    assert data.source == "shakespeare" and data.tokenizer.vocab_size == len(set(STAND_IN))
    assert len(data.train) + len(data.val) == len(STAND_IN) and len(data.val) == len(STAND_IN) // 10
    assert sorted(p.name for p in (cache / "corpora").iterdir()) == ["tinyshakespeare.txt"]
    use_url(monkeypatch, "http://127.0.0.1:9/unreachable")  # cached: no second download
    again = load_token_data("shakespeare", "char", cache_dir=cache)
    assert np.array_equal(all_tokens(data), all_tokens(again))


def test_a_checksum_mismatch_keeps_nothing(serve, monkeypatch, cache, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "input.txt").write_text("not shakespeare", encoding="utf-8")
    use_url(monkeypatch, f"{serve(tmp_path / 'site')}/input.txt")
    with pytest.raises(
        ValueError, match=rf"checksum mismatch for shakespeare .*expected sha256 {STAND_IN_SHA256}, got "
    ):
        load_token_data("shakespeare", "char", cache_dir=cache)
    assert list((cache / "corpora").iterdir()) == [] and cache_files(cache) == []


def test_a_corrupted_cached_download_is_fetched_again(serve, monkeypatch, cache, stand_in_site):
    (cache / "corpora").mkdir(parents=True)
    (cache / "corpora" / "tinyshakespeare.txt").write_text("truncated", encoding="utf-8")
    use_url(monkeypatch, f"{serve(stand_in_site)}/input.txt")
    source, files = corpus_documents("shakespeare", cache)
    assert files[0].read_text(encoding="utf-8") == STAND_IN


def test_a_failed_download_says_what_to_do_and_keeps_nothing(monkeypatch, cache):
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    use_url(monkeypatch, f"http://127.0.0.1:{port}/input.txt")
    with pytest.raises(ValueError, match=r"could not download shakespeare from .*pass --data PATH"):
        load_token_data("shakespeare", "char", cache_dir=cache)
    assert list((cache / "corpora").iterdir()) == []


def test_a_missing_file_on_the_server_is_a_failed_download(serve, monkeypatch, cache, tmp_path):
    use_url(monkeypatch, f"{serve(tmp_path)}/missing.txt")
    with pytest.raises(ValueError, match="HTTP Error 404"):
        corpus_documents("shakespeare", cache)


# Batches


def test_batches_are_windows_with_targets_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, batch_size=8, seq_len=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(y, x + 1)  # consecutive tokens of the corpus, y one step ahead
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_batches_are_reproducible_with_a_seeded_generator():
    tokens = np.random.default_rng(0).integers(0, 50, 500).astype(np.uint16)
    first = get_batch(tokens, 4, 10, torch.Generator().manual_seed(3))
    second = get_batch(tokens, 4, 10, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_every_window_can_be_drawn_including_the_last():
    tokens = np.arange(12, dtype=np.uint16)
    x, y = get_batch(tokens, batch_size=2000, seq_len=8, generator=torch.Generator().manual_seed(0))
    assert sorted(set(x[:, 0].tolist())) == [0, 1, 2, 3]  # starts 0 .. N - T - 1
    x, y = get_batch(tokens[:9], batch_size=3, seq_len=8, generator=torch.Generator())
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[0], torch.arange(1, 9))


def test_batches_read_from_the_memory_map(text_file, cache):
    data = load_token_data(str(text_file), "char", cache_dir=cache)
    x, y = get_batch(data.train, 4, 32, torch.Generator().manual_seed(0))
    text = data.tokenizer.decode(x[0].tolist()) + data.tokenizer.decode([y[0, -1].item()])
    assert text in TEXT


def test_a_corpus_shorter_than_one_window_says_how_many_tokens_are_needed():
    with pytest.raises(ValueError, match=r"only 64 tokens, but one window needs seq_len \+ 1 = 65"):
        get_batch(np.zeros(64, dtype=np.uint16), 2, 64, torch.Generator())


# Command-line flags


def test_data_flags_default_to_none_and_expand_bpe():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    assert vars(parser.parse_args([])) == {"data": None, "tokenizer": None}
    args = parser.parse_args(["--data", "shakespeare", "--tokenizer", "bpe"])
    assert (args.data, args.tokenizer) == ("shakespeare", "bpe:1024")


def test_an_unknown_tokenizer_flag_is_a_usage_error_listing_the_valid_ones(capsys):
    parser = argparse.ArgumentParser(prog="tinytransformer train")
    add_data_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--tokenizer", "p51k_base"])
    assert exit_info.value.code == 2
    assert "unknown tokenizer 'p51k_base'; choose char, bpe" in capsys.readouterr().err


def test_the_flags_have_help_text():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    text = parser.format_help()
    assert "shakespeare" in text and "p50k_base" in text and "TIKTOKEN_CACHE_DIR" in text


@pytest.mark.parametrize("damage", ["truncated tokens", "torn description", "description without fields"])
def test_a_damaged_token_cache_is_named_and_built_again(text_file, cache, capsys, damage):
    first = load_token_data(str(text_file), "char", cache_dir=cache)
    expected = all_tokens(first).copy()
    del first
    tokens = next((cache / "tokens").glob("*.bin"))
    if damage == "truncated tokens":
        tokens.write_bytes(tokens.read_bytes()[:-10])
    elif damage == "torn description":
        tokens.with_suffix(".json").write_text('{"n_tokens": 12')
    else:
        tokens.with_suffix(".json").write_text("{}")
    again = load_token_data(str(text_file), "char", cache_dir=cache)
    assert f"the token cache {tokens} is damaged; building it again" in capsys.readouterr().err
    assert np.array_equal(all_tokens(again), expected)


def test_partial_files_left_by_a_kill_are_swept_after_an_hour(text_file, cache):
    folder = cache / "tokens"
    folder.mkdir(parents=True)
    old, recent = folder / ".abc.bin.x1.tmp", folder / ".abc.bin.x2.tmp"
    old.write_bytes(b"half")
    recent.write_bytes(b"being written by another process right now")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    load_token_data(str(text_file), "char", cache_dir=cache)
    assert not old.exists() and recent.exists()
