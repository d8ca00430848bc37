"""Boundaries of gristmill.filters.models the main tests leave open: how a spec resolves (empty, ~, a folder), the
download cache's file names and keys, servers that send no length or stall, and fastText files whose layout the
main tests' models do not have. Each is checked against a hand computation, the documented rule, or fastText
itself (loopback server only: no network)."""
from __future__ import annotations

import hashlib
import struct
import tempfile
import urllib.request
from pathlib import Path

import pytest

from gristmill.errors import UserError
from gristmill.filters import models


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- resolving a spec ---

def test_an_empty_spec_is_the_provisioned_default(cache):
    default = cache / "toxicity" / "badwords.en.txt"  # MODELS["badwords"].default, under the cache
    default.parent.mkdir(parents=True)
    default.write_text("zzbad\n")
    assert models.resolve("badwords", "") == models.resolve("badwords", None) == default


def test_a_tilde_path_is_under_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "words.txt").write_text("zzbad\n")
    assert models.resolve("badwords", "~/words.txt") == tmp_path / "home" / "words.txt"


def test_a_folder_is_no_model(cache, tmp_path):
    with pytest.raises(UserError, match=r"lid model .* is missing: give an existing file or URL"):
        models.resolve("lid", str(tmp_path))
    (cache / "lid" / "lid.176.ftz").mkdir(parents=True)  # the default's name, but a folder
    with pytest.raises(UserError, match=r"lid model .*lid\.176\.ftz is missing: run `beam model fetch-lid`"):
        models.resolve("lid")


# --- the download cache ---

def test_url_schemes_are_case_insensitive(cache, server, tmp_path):
    # RFC 3986 section 3.1: a scheme is case-insensitive, and urllib opens HTTP:// and FILE:// as it opens the
    # lowercase forms; such a URL is not a local path that "is missing".
    server.serve("/m.bin", b"by http")
    src = tmp_path / "words.txt"
    src.write_text("by file")
    assert models.resolve("badwords", f"HTTP://{server.base.removeprefix('http://')}/m.bin").read_bytes() == b"by http"
    assert models.resolve("badwords", "FILE://" + src.as_uri().removeprefix("file://")).read_text() == "by file"
    assert models.is_url("HTTPS://example.org/lid.bin") and not models.is_url("https:/lid.bin")



def test_a_download_is_named_by_the_urls_hash_and_last_segment(cache, server):
    # The docstring's rule by hand: CACHE/downloads/<first 12 hex of sha256(url)>-<last path segment>, where a
    # trailing slash does not make the segment empty.
    server.serve("/models/lid.bin", b"one")
    server.serve("/models/latest/", b"two")
    for url, name, data in ((f"{server.base}/models/lid.bin", "lid.bin", b"one"),
                            (f"{server.base}/models/latest/", "latest", b"two")):
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        path = models.resolve("badwords", url)
        assert path == cache / "downloads" / f"{digest}-{name}" and path.read_bytes() == data


def test_two_urls_with_one_file_name_are_two_downloads(cache, server):
    # CCNet publishes en.arpa.bin, and so does a mirror with another model: the cache key is the whole URL.
    server.serve("/a/en.bin", b"first model")
    server.serve("/b/en.bin", b"second model")
    first = models.resolve("kenlm", f"{server.base}/a/en.bin")
    second = models.resolve("kenlm", f"{server.base}/b/en.bin")
    assert first != second
    assert first.read_bytes() == b"first model" and second.read_bytes() == b"second model"


def test_a_cached_download_is_reused_without_writing_to_the_cache(cache):
    # A cache provisioned once and then shared read-only still serves what it holds, with no server at all. (Root
    # ignores chmod, so the check is that nothing under the cache is created, not only that no error is raised.)
    url = "http://127.0.0.1:9/models/badwords.txt"  # the discard port: nothing listens on loopback
    path = cache / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-badwords.txt"
    path.parent.mkdir(parents=True)
    path.write_text("zzbad\n")
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    for folder in (cache / "downloads", cache):
        folder.chmod(0o555)
    try:
        assert models.resolve("badwords", url) == path
    finally:
        for folder in (cache, cache / "downloads"):
            folder.chmod(0o755)
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before


def test_a_body_without_content_length_is_downloaded_whole(cache, server):
    data = bytes(range(256)) * 40
    server.serve("/plain/model.bin", data, "nolength")
    path = models.resolve("badwords", f"{server.base}/plain/model.bin")
    assert path.read_bytes() == data
    assert [p.name for p in (cache / "downloads").iterdir()] == [path.name]


def test_a_server_that_stalls_is_one_line_and_leaves_nothing(cache, server, monkeypatch):
    server.serve("/slow.bin", b"x" * 1000, "stall")
    real = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: real(url, timeout=0.5))  # not 60 s
    with pytest.raises(UserError) as e:
        models.resolve("lid", f"{server.base}/slow.bin")
    msg = str(e.value)
    assert msg.startswith(f"cannot download lid model from {server.base}/slow.bin (") and "\n" not in msg
    assert list((cache / "downloads").iterdir()) == []


def test_a_malformed_url_is_one_line(cache):
    with pytest.raises(UserError) as e:
        models.resolve("lid", "http://[::1/lid.bin")  # urllib: ValueError("Invalid IPv6 URL")
    assert str(e.value).startswith("cannot download lid model from http://[::1/lid.bin (Invalid IPv6 URL)")
    assert list((cache / "downloads").iterdir()) == []


def test_the_partial_file_is_made_in_the_cache_not_the_system_temp_folder(cache, server, tmp_path, monkeypatch):
    # The rename into place is atomic only within one filesystem; a missing or full /tmp must not matter.
    server.serve("/m.bin", b"model bytes")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-folder"))
    assert models.resolve("badwords", f"{server.base}/m.bin").read_bytes() == b"model bytes"


# --- labels ---

class _Labels:
    def __init__(self, labels):
        self.labels = labels

    def get_labels(self):
        return self.labels


@pytest.mark.parametrize("n, shown", [
    (8, "a0, a1, a2, a3, a4, a5, a6, a7"),
    (9, "a0, a1, a2, a3, a4, a5, a6, a7, ..."),
])
def test_an_unknown_label_lists_the_first_eight(n, shown):
    model = _Labels([f"__label__a{i}" for i in range(n)])
    with pytest.raises(UserError) as e:
        models.require_labels(model, ["a1", "__label__zz"], "quality", "q.bin", "pick one")
    assert str(e.value) == f"quality: model q.bin has no label '__label__zz' (its labels: {shown}); pick one"


def test_label_name_removes_only_a_leading_prefix():
    assert models.label_name("__label__en") == "en" and models.label_name("en") == "en"
    assert models.label_name("__label__a__label__b") == "a__label__b"  # str.removeprefix, as fastText's own
    assert models.label_name("x__label__") == "x__label__"


# --- fastText files of other layouts, checked by fastText itself ---

def test_a_quantized_model_with_norms_is_sized_exactly():
    import fasttext

    # The provisioned quality.ftz: quantized by fastText with qnorm=True (gristmill.filters.classifier), so norm
    # codes and a second quantizer follow the codes of its input matrix, which lid.176.ftz does not have.
    path = models.default_path("quality")
    assert path.is_file(), f"{path} is missing: run `beam model provision` before the tests"
    assert models.fasttext_size(path) == path.stat().st_size
    assert models.load_fasttext("quality", path).get_labels() == fasttext.load_model(str(path)).get_labels()


def _dense_model_with_qout_flag(path: Path) -> None:
    """A whole supervised fastText .bin written field by field (fastText 0.9.3's FastText::saveModel) whose
    output-quantized flag is set although its input is dense: fastText then reads a dense output matrix
    (loadModel: `if (quant_ && args_->qout)`)."""
    dim, rows = 4, 5
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", models.FASTTEXT_MAGIC, 12))
        f.write(struct.pack("<12id", dim, 5, 5, 1, 5, 1, 3, 3, 0, 0, 0, 100, 1e-4))
        f.write(struct.pack("<iiiqq", 3, 1, 2, 1000, -1))
        for word, kind in ((b"w", 0), (b"__label__a", 1), (b"__label__b", 1)):
            f.write(word + b"\0" + struct.pack("<qb", 10, kind))
        f.write(struct.pack("<?qq", False, rows, dim) + struct.pack(f"<{rows * dim}f", *[0.25] * (rows * dim)))
        f.write(struct.pack("<?qq", True, 2, dim) + struct.pack(f"<{2 * dim}f", *[0.5] * (2 * dim)))


def test_a_dense_model_with_the_qout_flag_has_a_dense_output(tmp_path):
    import fasttext

    path = tmp_path / "dense.bin"
    _dense_model_with_qout_flag(path)
    assert sorted(fasttext.load_model(str(path)).get_labels()) == ["__label__a", "__label__b"]  # the peer
    assert models.fasttext_size(path) == path.stat().st_size
    assert sorted(models.load_fasttext("quality", path).get_labels()) == ["__label__a", "__label__b"]


def test_bytes_after_a_whole_model_are_not_a_truncation(lid_model, tmp_path):
    import fasttext

    padded = tmp_path / "lid.176.ftz"
    padded.write_bytes(lid_model.read_bytes() + bytes(64))
    text = ["The river rises in the hills and runs to the sea."]
    assert fasttext.load_model(str(padded)).predict(text)[0] == [["__label__en"]]  # fastText reads it as whole
    assert models.load_fasttext("lid", padded).predict(text)[0] == [["__label__en"]]


def test_a_newer_fasttext_format_version_is_one_line(lid_model, tmp_path):
    data = bytearray(lid_model.read_bytes())
    data[4:8] = struct.pack("<i", 99)  # fastText 0.9 refuses versions above 12 ("has wrong file format")
    path = tmp_path / "lid.176.ftz"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        models.load_fasttext("lid", path)
    assert str(e.value) == (f"lid model {path} is unreadable or corrupt: re-create it with "
                            f"`beam model fetch-lid --force` or pass another file")


# --- SentencePiece by URL, sidecars, log ---

def test_a_sentencepiece_model_by_file_url(cache, tiny_ccnet):
    import sentencepiece

    sp_model, _ = tiny_ccnet
    sp = models.load_sentencepiece(sp_model.as_uri())
    peer = sentencepiece.SentencePieceProcessor()
    peer.load(str(sp_model))
    text = "the river rises in the hills"
    assert sp.encode_as_pieces(text) == peer.encode_as_pieces(text)
    assert [p.parent for p in (cache / "downloads").iterdir()] == [cache / "downloads"]


def test_a_sidecar_keeps_the_model_name_whole():
    assert models.sidecar(Path("m/en.binary"), ".buckets.json") == Path("m/en.binary.buckets.json")  # docstring
    assert models.sidecar(Path("q/quality.ftz"), ".quantiles.json") == Path("q/quality.ftz.quantiles.json")


def test_log_goes_to_stderr_unless_quiet(capsys):
    models.log("wrote x")
    models.log("not this", quiet=True)
    assert capsys.readouterr() == ("", "wrote x\n")
