"""Tokenizers: round trips, BPE training, tiktoken's format and encodings, descriptions, errors."""

import io
import json
import os
import random
import socket
import subprocess
import sys

import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry
import torch

from tinytransformer.tokenizer import (
    DEFAULT_TOKENIZER,
    BPETokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    get_tokenizer,
    load_encoding,
    ranks_from_text,
    ranks_to_text,
    tokenizer_from_dict,
    tokenizer_name,
    train_bpe,
)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n"
) * 5
PRETRAINED = ["gpt2", "r50k_base", "p50k_base"]  # from tiktoken's cache or the network, else skipped (conftest.py)

TRICKY = [
    "",
    "a",
    "Hello, world!",
    "emoji 🙂👍🏽 and a family 👩‍👩‍👧 (zero-width joiners)",
    "whitespace   runs\t\t\ttabs\n\n\n\nnewlines \r\n crlf   \u00a0nbsp\u3000ideographic",
    "        deeply indented code\n    return x",
    "中文 日本語 한국어 العربية עברית Ελληνικά кириллица",
    "combining: e\u0301 n\u0303 Å Å",
    "control \x00 \x07 \x1b[0m characters",
    "a literal <|endoftext|> is just text",
    "digits 1234567890 3.14159 1e-10 0x1F",
]


def random_unicode(rng: random.Random, length: int) -> str:
    """Code points from ASCII, Latin-1, CJK, emoji and the rest of the planes (no surrogates)."""
    ranges = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x17F), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0, 0x10FFFF)]
    chars = []
    while len(chars) < length:
        low, high = rng.choice(ranges)
        code = rng.randint(low, high)
        if not 0xD800 <= code <= 0xDFFF:
            chars.append(chr(code))
    return "".join(chars)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer(train_bpe(CORPUS, vocab_size=300), "bpe:300")


@pytest.fixture(scope="module", params=PRETRAINED)
def pretrained(request, pretrained_encodings) -> TiktokenTokenizer:
    return TiktokenTokenizer(load_encoding(request.param), request.param)


# Round trips


@pytest.mark.parametrize("text", TRICKY)
def test_char_round_trip_on_text_of_its_own_vocabulary(text):
    tokenizer = CharTokenizer(text + "x")
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text)


@pytest.mark.parametrize("text", TRICKY)
def test_byte_level_bpe_round_trips_any_unicode(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY)
def test_pretrained_encodings_round_trip_any_unicode(pretrained, text):
    assert pretrained.decode(pretrained.encode(text)) == text


def test_random_unicode_round_trips_through_every_byte_level_tokenizer(bpe, pretrained):
    rng = random.Random(0)
    for _ in range(50):
        text = random_unicode(rng, rng.randint(0, 60))
        assert bpe.decode(bpe.encode(text)) == text
        assert pretrained.decode(pretrained.encode(text)) == text


def test_every_tokenizer_satisfies_the_interface(bpe, pretrained):
    for tokenizer in (CharTokenizer("abc"), bpe, pretrained):
        assert isinstance(tokenizer, Tokenizer)
        ids = tokenizer.encode("abc")
        assert all(0 <= i < tokenizer.vocab_size for i in ids)


# Characters


def test_char_vocabulary_is_the_sorted_distinct_characters():
    tokenizer = CharTokenizer("hello world")
    assert tokenizer.chars == " dehlorw"
    assert tokenizer.vocab_size == 8 and tokenizer.eot_id is None
    assert tokenizer.encode("hello") == [3, 2, 4, 4, 5]


def test_char_encode_names_the_unknown_character_and_its_position():
    with pytest.raises(ValueError, match=r"'🐝' \(U\+1F41D\) at position 3 .*bpe or p50k_base"):
        CharTokenizer("abc ").encode("ab 🐝")


def test_char_tokenizer_needs_text():
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="pass its text"):
        get_tokenizer("char")


@pytest.mark.parametrize("bad_id", [-1, 3, 100])
def test_decode_rejects_ids_outside_the_vocabulary(bad_id, bpe):
    with pytest.raises(ValueError, match=f"token id {bad_id} is outside the vocabulary"):
        CharTokenizer("abc").decode([0, bad_id])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bpe.decode([0, bpe.vocab_size + bad_id if bad_id >= 0 else bad_id])


def test_decode_accepts_tensor_and_numpy_ids(bpe):
    ids = bpe.encode("speak, speak")
    assert bpe.decode(torch.tensor(ids).tolist()) == "speak, speak"
    assert bpe.decode(torch.tensor(ids).numpy()) == "speak, speak"


# BPE training


def test_bpe_training_accepts_any_iterable_of_pieces():
    pieces = [CORPUS[:100], CORPUS[100:]]
    assert train_bpe(iter(pieces), 400) == train_bpe(pieces, 400) == train_bpe(CORPUS, 400)


def outputs_under_two_hash_seeds(code: str) -> list[str]:
    """What ``code`` prints in two fresh interpreters whose string hashes differ (PYTHONHASHSEED 1 and 2)."""
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    return outputs


def test_bpe_training_does_not_depend_on_the_string_hash_seed():
    code = ("import hashlib; from tinytransformer.tokenizer import ranks_to_text, train_bpe; "
            f"print(hashlib.sha256(ranks_to_text(train_bpe({CORPUS!r} * 3, 420)).encode()).hexdigest())")
    first, second = outputs_under_two_hash_seeds(code)
    assert len(first.strip()) == 64 and first == second


def test_the_hash_seed_check_sees_an_order_that_depends_on_the_seed():
    first, second = outputs_under_two_hash_seeds("print(list({'speak', 'resolved', 'famish', 'citizen', 'proceed'}))")
    assert first != second  # so the test above would catch training that iterated over a set of strings


def test_bpe_ranks_are_the_256_bytes_then_merges_with_contiguous_ids():
    ranks = train_bpe(CORPUS, 300)
    assert [ranks[bytes([b])] for b in range(256)] == list(range(256))
    assert sorted(ranks.values()) == list(range(len(ranks)))
    for token, rank in ranks.items():
        assert (len(token) == 1) == (rank < 256)


def test_bpe_merges_the_most_frequent_pair_first():
    ranks = train_bpe("ab ab ab cd", 257)
    assert len(ranks) == 257
    assert max(ranks, key=ranks.get) == b"ab"  # (a, b) occurs 3 times, (' ', a) twice


def test_bpe_never_merges_across_pre_tokenisation_chunks():
    ranks = train_bpe("dog, dog, dog, dog. cat, cat, cat.", 400)
    learned = [token for token, rank in ranks.items() if rank >= 256]
    assert b" dog" in learned and b" cat" in learned
    assert not any(b"g," in token or b", " in token or b"t." in token for token in learned)


def test_bpe_stops_when_no_pair_occurs_twice():
    ranks = train_bpe("abcabc xyz", 1000)
    assert 256 < len(ranks) < 1000
    assert train_bpe("abcdefg", 1000) == {bytes([b]): b for b in range(256)}


def test_bpe_vocab_size_below_256_is_rejected():
    with pytest.raises(ValueError, match="at least 256"):
        train_bpe(CORPUS, 255)


def test_bpe_compresses_its_corpus(bpe):
    assert len(bpe.encode(CORPUS)) < len(CORPUS.encode("utf-8")) / 2


def test_bpe_vocab_size_counts_every_rank_and_it_has_no_end_of_text(bpe):
    assert bpe.vocab_size == len(bpe.ranks) == 300
    assert bpe.eot_id is None
    assert bpe.encode("<|endoftext|>") == bpe.encode("<|") + bpe.encode("endoftext") + bpe.encode("|>")


# tiktoken's rank format


def test_ranks_text_is_tiktokens_format():
    assert ranks_to_text({b" the": 1, b"a": 0}) == "YQ== 0\nIHRoZQ== 1\n"


def test_saved_ranks_load_with_tiktokens_own_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))  # it caches local files too
    ranks = train_bpe(CORPUS, 300)
    path = tmp_path / "bpe300.tiktoken"
    path.write_text(ranks_to_text(ranks), encoding="ascii")
    assert tiktoken.load.load_tiktoken_bpe(str(path)) == ranks
    assert ranks_from_text(path.read_text(encoding="ascii")) == ranks


def test_ranks_from_text_names_the_bad_line():
    with pytest.raises(ValueError, match=r"line 2 of the ranks"):
        ranks_from_text("YQ== 0\nnot-base64!! x\n")


def test_bpe_encodes_like_replaying_its_merges_in_training_order():
    ranks = train_bpe(CORPUS, 320)
    merges = sorted((rank, token) for token, rank in ranks.items() if rank >= 256)
    tokenizer = BPETokenizer(ranks)
    for word in ["Citizen", " proceed", " resolved", " famish"]:
        parts = [bytes([b]) for b in word.encode()]
        for _, token in merges:  # the slow, obvious algorithm
            i = 0
            while i < len(parts) - 1:
                if parts[i] + parts[i + 1] == token:
                    parts[i : i + 2] = [token]
                else:
                    i += 1
        assert [tokenizer.encoding.decode_single_token_bytes(t) for t in tokenizer.encode(word)] == parts


# Pretrained encodings


@pytest.mark.pretrained_encodings
def test_p50k_base_token_ids_for_a_fixed_sentence():
    tokenizer = get_tokenizer("p50k_base")
    sentence = "Hello world! The quick brown fox jumps over the lazy dog."
    assert tokenizer.encode(sentence) == [15496, 995, 0, 383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
    assert tokenizer.vocab_size == 50281 and tokenizer.eot_id == 50256


@pytest.mark.pretrained_encodings
def test_p50k_base_has_tokens_for_runs_of_spaces_that_gpt2_lacks():
    code = "def f(x):\n        return x  # ok"
    assert get_tokenizer("p50k_base").encode(code) == [4299, 277, 7, 87, 2599, 198, 50262, 1441, 2124, 220, 1303, 12876]
    spaces = [220] * 7  # gpt2 has no token for a run of spaces
    assert get_tokenizer("gpt2").encode(code) == [4299, 277, 7, 87, 2599, 198, *spaces, 1441, 2124, 220, 1303, 12876]
    assert get_tokenizer("gpt2").vocab_size == 50257


def test_special_token_text_is_encoded_as_ordinary_text(pretrained):
    ids = pretrained.encode("a <|endoftext|> b")
    assert pretrained.eot_id == 50256 and pretrained.eot_id not in ids


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No tiktoken cache and no network: any connection attempt fails loudly."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    (tmp_path / "empty-cache").mkdir()
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget encodings loaded earlier in this process

    def no_network(*args, **kwargs):
        raise requests.ConnectionError("network disabled by the test")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path / "empty-cache"


@pytest.mark.parametrize(
    "build",
    [lambda: get_tokenizer("p50k_base"), lambda: tokenizer_from_dict({"kind": "tiktoken", "name": "p50k_base"})],
)
def test_missing_encoding_offline_names_it_the_cache_variable_and_alternatives(offline, build):
    with pytest.raises(ValueError) as error:
        build()
    message = str(error.value)
    assert "'p50k_base'" in message and "TIKTOKEN_CACHE_DIR" in message and str(offline) in message
    assert "--tokenizer char" in message and "--tokenizer bpe" in message
    assert "ConnectionError" in message
    assert list(offline.iterdir()) == []


def test_char_and_bpe_work_offline(offline):
    assert get_tokenizer("char", CORPUS).decode(get_tokenizer("char", CORPUS).encode("Speak")) == "Speak"
    assert get_tokenizer("bpe:300", CORPUS).vocab_size == 300


# Specs and descriptions


@pytest.mark.parametrize(
    "spec, name",
    [
        ("char", "char"),
        ("bpe", DEFAULT_TOKENIZER),
        ("bpe:4096", "bpe:4096"),
        ("bpe:0300", "bpe:300"),
        ("p50k_base", "p50k_base"),
        ("gpt2", "gpt2"),
    ],
)
def test_tokenizer_name_is_the_canonical_spec(spec, name):
    assert tokenizer_name(spec) == name


def test_the_built_tokenizer_carries_the_canonical_name():
    assert get_tokenizer("bpe", CORPUS).name == "bpe:1024"  # fewer tokens learned from a small corpus
    assert get_tokenizer("bpe", CORPUS).vocab_size < 1024


@pytest.mark.parametrize("spec", ["p51k_base", "BPE", "chars", "", "gpt-2"])
def test_unknown_tokenizer_lists_the_valid_ones(spec):
    with pytest.raises(ValueError, match=r"unknown tokenizer .*choose char, bpe, bpe:VOCAB_SIZE") as error:
        get_tokenizer(spec, CORPUS)
    assert all(name in str(error.value) for name in ("gpt2", "r50k_base", "p50k_base", "cl100k_base"))


@pytest.mark.parametrize("spec", ["bpe:100", "bpe:abc", "bpe:", "bpe:-300", "bpe:1e4"])
def test_bpe_spec_needs_a_size_of_at_least_256(spec):
    with pytest.raises(ValueError, match="at least 256"):
        tokenizer_name(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "char",
        "bpe:300",
        *(pytest.param(name, marks=pytest.mark.pretrained_encodings) for name in ("p50k_base", "gpt2")),
    ],
)
def test_description_is_plain_data_that_rebuilds_an_identical_tokenizer(spec):
    tokenizer = get_tokenizer(spec, CORPUS)
    state = tokenizer.to_dict()
    assert json.loads(json.dumps(state)) == state  # only str, int, list, dict
    buffer = io.BytesIO()
    torch.save({"tokenizer": state}, buffer)
    buffer.seek(0)
    rebuilt = tokenizer_from_dict(torch.load(buffer, weights_only=True)["tokenizer"])
    assert type(rebuilt) is type(tokenizer)
    assert (rebuilt.name, rebuilt.vocab_size, rebuilt.eot_id) == (
        tokenizer.name,
        tokenizer.vocab_size,
        tokenizer.eot_id,
    )
    assert rebuilt.encode(CORPUS) == tokenizer.encode(CORPUS)


def test_char_and_bpe_accept_the_corpus_as_pieces():
    pieces = [CORPUS[: len(CORPUS) // 2], CORPUS[len(CORPUS) // 2 :]]
    assert get_tokenizer("char", iter(pieces)).chars == get_tokenizer("char", CORPUS).chars


@pytest.mark.parametrize(
    "state, message",
    [
        ({"kind": "morse", "name": "morse"}, "unknown tokenizer kind 'morse'"),
        ({"kind": "char"}, "missing 'name'"),
        ({"kind": "bpe", "name": "bpe:300"}, "missing 'ranks'"),
        ({"kind": "tiktoken", "name": "p99k"}, "unknown tokenizer 'p99k'"),
    ],
)
def test_malformed_descriptions_are_refused(state, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_from_dict(state)


def test_a_bpe_vocabulary_larger_than_the_corpus_supports_is_reported(capsys):
    tokenizer = get_tokenizer("bpe:999999", CORPUS)
    assert tokenizer.name == "bpe:999999" and tokenizer.vocab_size < 999_999
    assert f"the corpus supports only {tokenizer.vocab_size:,} BPE tokens" in capsys.readouterr().err
