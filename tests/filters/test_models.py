"""Model resolution and errors: missing or corrupt files and unreachable URLs give one line naming the fix."""
from __future__ import annotations

import pickle

import pytest

from gristmill.errors import UserError
from gristmill.filters import models
from gristmill.filters.kenlm_filter import KenLMFilter
from gristmill.filters.langid import LanguageIDFilter
from gristmill.filters.quality import QualityFilter
from gristmill.filters.toxicity import BadWordsFilter, ToxicityFilter
from gristmill.pipeline.cli import main as beam_main


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("flt,command", [
    (LanguageIDFilter(), "beam model fetch-lid"), (KenLMFilter(), "beam model train-kenlm"),
    (QualityFilter(), "beam model train-quality"), (ToxicityFilter(), "beam model train-toxicity"),
    (BadWordsFilter(), "beam model provision"),
])
def test_missing_default_model_names_its_command(empty_cache, flt, command):
    with pytest.raises(UserError) as e:
        flt.setup()
    msg = str(e.value)
    assert "\n" not in msg and f"run `{command}`" in msg and str(empty_cache) in msg


@pytest.mark.parametrize("kind,flt", [("lid", LanguageIDFilter), ("quality", QualityFilter),
                                      ("toxicity", ToxicityFilter), ("kenlm", KenLMFilter)])
def test_corrupt_model_file(tmp_path, kind, flt):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"this is not a model" * 10)
    with pytest.raises(UserError, match=f"corrupt: re-create it with `{models.MODELS[kind].command} --force`"):
        flt(model=str(bad)).setup()


def test_url_models_download_once_and_fail_clearly_offline(empty_cache, tmp_path):
    src = tmp_path / "words.txt"
    src.write_text("zzbadword\n")
    path = models.resolve("badwords", src.as_uri())
    assert path.read_text() == "zzbadword\n" and path.parent == empty_cache / "downloads"
    src.unlink()
    assert models.resolve("badwords", src.as_uri()) == path  # cached: no second fetch
    with pytest.raises(UserError, match="cannot download lid model from .*pass its local path"):
        models.resolve("lid", (tmp_path / "nowhere.bin").as_uri())


def test_filters_pickle_without_models(lid_model):
    flt = LanguageIDFilter(model=str(lid_model))
    flt.setup()
    clone = pickle.loads(pickle.dumps(flt))  # what Beam ships to workers
    assert clone._model is None and clone.model == str(lid_model)


def test_cli_errors_are_one_line(empty_cache, tmp_path, capsys):
    assert beam_main(["model", "train-toxicity", "--jigsaw", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Jigsaw CSV") and "\n" not in err
    assert beam_main(["model", "fetch-lid", "--path", str(tmp_path / "none.ftz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_help_has_examples(capsys):
    for cmd in ("provision", "fetch-lid", "train-kenlm", "calibrate-kenlm", "train-quality",
                "calibrate-classifier", "train-toxicity"):
        with pytest.raises(SystemExit):
            beam_main(["model", cmd, "--help"])
        assert "example" in capsys.readouterr().out


def test_recipe_with_missing_model_fails_before_the_pipeline_starts(empty_cache, tmp_path):
    from gristmill.pipeline.docio import CreateDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import FilterStage, RunContext

    stages = [CreateDocuments("Docs", []), FilterStage("Quality", QualityFilter(model=str(tmp_path / "no.ftz")))]
    with pytest.raises(UserError, match="quality model .*no.ftz is missing"):
        run_stages(stages, RunContext(output=str(tmp_path / "out")), ["--direct_num_workers=1"])


def test_corrupt_calibration_sidecar_is_one_line(tiny_kenlm, tiny_quality, tmp_path):
    import shutil

    for model, suffix, flt, command in [(tiny_kenlm, ".buckets.json", lambda p: KenLMFilter(model=p), "calibrate-kenlm"),
                                        (tiny_quality, ".quantiles.json",
                                         lambda p: QualityFilter(model=p, keep_top_fraction=0.1), "calibrate-classifier")]:
        copy = tmp_path / model.name
        shutil.copyfile(model, copy)
        for damage in ('{"head_max": ', '{"other": 1}', "[]"):
            models.sidecar(copy, suffix).write_text(damage)
            with pytest.raises(UserError) as e:
                flt(str(copy)).setup()
            assert "\n" not in str(e.value) and f"beam model {command}" in str(e.value) and "corrupt" in str(e.value)


def test_calibrate_classifier_replaces_quantiles_only_with_force(tiny_quality, tmp_path, capsys):
    import shutil

    model = tmp_path / "q.bin"
    shutil.copyfile(tiny_quality, model)
    quantiles = models.sidecar(model, ".quantiles.json")
    quantiles.write_text("kept")
    (tmp_path / "s.txt").write_text("Some sample prose about rivers.\n\nAnother paragraph of plain text here.\n")
    argv = ["model", "calibrate-classifier", "--model", str(model), "--sample", str(tmp_path / "s.txt")]
    assert beam_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err and quantiles.read_text() == "kept"
    assert beam_main(argv + ["--force"]) == 0
    assert quantiles.read_text() != "kept"


def test_model_commands_describe_themselves(capsys):
    for cmd in ("calibrate-kenlm", "calibrate-classifier"):
        with pytest.raises(SystemExit):
            beam_main(["model", cmd, "--help"])
        out = capsys.readouterr().out
        assert out.split("\n\n")[1].strip() and not out.split("\n\n")[1].lstrip().startswith(("options", "-"))
    with pytest.raises(SystemExit):
        beam_main(["model", "calibrate-classifier", "--help"])
    assert "default quality" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["fetch-lid", "train-kenlm", "train-quality", "train-toxicity", "fetch-url-lists"])
def test_an_out_path_no_file_can_be_written_at_is_one_line(tmp_path, capsys, command):
    # /dev/null is a device, not a folder: no file can be made under it (mkdir says "File exists").
    assert beam_main(["model", command, "--out", "/dev/null/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write /dev/null/x") and err.endswith("/dev/null is a file, not a folder"), err
    assert "\n" not in err
    if command != "fetch-url-lists":  # its --out is a folder
        assert beam_main(["model", command, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: output {tmp_path} is a folder: give the path of the file to write"


# --- published models by path or URL: truncated files, wrong kinds, downloads (loopback server only) ---

import errno  # noqa: E402
import fcntl  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _fasttext_labels(path: Path) -> list[str]:
    import fasttext

    return fasttext.load_model(str(path)).get_labels()


def test_fasttext_size_is_the_file_size_of_real_models(lid_model, tiny_quality, tiny_toxicity):
    # lid.176.ftz (quantized, pruned dictionary), a dense .bin, and a trained model; every byte accounted for.
    for path in (lid_model, tiny_quality, tiny_toxicity[0], models.default_path("kenlm")):
        if path.suffix == ".binary":
            assert path.is_file() and models.fasttext_size(path) is None  # a KenLM file: another magic
        else:
            assert models.fasttext_size(path) == path.stat().st_size, path


@pytest.mark.parametrize("cut", [13, 1_000, 38_013, 469_007])
def test_truncated_lid_model_is_refused(lid_model, tmp_path, cut):
    # fastText itself loads these (the matrices are cut short) and crashes at the first prediction.
    data = lid_model.read_bytes()
    short = tmp_path / "lid.176.ftz"
    short.write_bytes(data[:-cut])
    with pytest.raises(UserError) as e:
        LanguageIDFilter(model=str(short)).setup()
    assert "is truncated" in str(e.value) and "beam model fetch-lid --force" in str(e.value)
    assert "\n" not in str(e.value)


def test_truncated_model_header_is_an_error_line_not_a_hang(lid_model, tiny_quality, tmp_path):
    # Cut inside the dictionary, fastText 0.9.3 reads past the end forever; run in a child with a time limit.
    lid_short, quality_short = tmp_path / "lid.ftz", tmp_path / "quality.bin"
    lid_short.write_bytes(lid_model.read_bytes()[:10_000])
    quality_short.write_bytes(tiny_quality.read_bytes()[:200])
    for kind, path in (("lid", lid_short), ("quality", quality_short)):
        code = (f"from gristmill.filters import models\nfrom gristmill.errors import UserError\n"
                f"try:\n    models.load_fasttext({kind!r}, {str(path)!r})\nexcept UserError as e:\n    print(e)")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "is truncated" in r.stdout, (r.returncode, r.stdout, r.stderr[-500:])


def test_model_of_the_wrong_kind_is_one_line(lid_model, tiny_kenlm):
    with pytest.raises(UserError, match="is not a fastText model, or is corrupt: re-create it with `beam model "
                                        "train-quality --force`"):
        QualityFilter(model=str(tiny_kenlm)).setup()  # a KenLM binary given as fastText
    with pytest.raises(UserError, match="kenlm model .* is unreadable or corrupt"):
        models.load_kenlm(lid_model)  # a fastText model given as KenLM
    with pytest.raises(UserError, match="sentencepiece model .* is unreadable or corrupt: pass the .sp.model"):
        models.load_sentencepiece(lid_model)


def test_http_download_is_reused_and_loads(empty_cache, server, lid_model):
    url = server.serve("/lid.176.ftz", lid_model.read_bytes())
    flt = LanguageIDFilter(model=url)
    assert flt.predict(["The river rises in the hills and runs to the sea."])[0][0] == "en"
    path = models.resolve("lid", url)
    assert path.read_bytes() == lid_model.read_bytes() and server.hits == {"/lid.176.ftz": 1}
    with pytest.raises(UserError, match=r"cannot download lid model from .*/missing.bin \(Not Found\)"):
        models.resolve("lid", f"{server.base}/missing.bin")


def test_a_download_cut_short_is_never_used(empty_cache, server, lid_model):
    url = server.serve("/short/lid.176.ftz", lid_model.read_bytes(), "short")
    with pytest.raises(UserError) as e:
        models.resolve("lid", url)
    size = lid_model.stat().st_size
    assert f"stopped after {size // 2:,} of {size:,} bytes" in str(e.value) and "\n" not in str(e.value)
    assert list((empty_cache / "downloads").iterdir()) == []


def test_concurrent_workers_fetch_one_url_once(empty_cache, server, lid_model):
    url = server.serve("/slow/lid.176.ftz", lid_model.read_bytes(), "slow")
    results: list = []

    def worker():
        try:
            results.append(models.resolve("lid", url).read_bytes() == lid_model.read_bytes())
        except BaseException as e:  # noqa: BLE001 - the test reports what a worker would have died of
            results.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4 and server.hits == {"/slow/lid.176.ftz": 1}
    assert len(list((empty_cache / "downloads").iterdir())) == 1  # the model, and no temporary file


def _flock_raising(err: int):
    def flock(f, op):
        raise OSError(err, os.strerror(err))
    return flock


@pytest.mark.parametrize("err", [errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL], ids=errno.errorcode.get)
def test_a_cache_on_a_filesystem_without_locks_downloads_unlocked_with_one_warning(empty_cache, server, lid_model,
                                                                                   monkeypatch, caplog, err):
    # Some NFS and FUSE mounts refuse flock; the download is atomic without it, so it goes on, and says so.
    server.serve("/lid.176.ftz", lid_model.read_bytes())
    monkeypatch.setattr(fcntl, "flock", _flock_raising(err))
    with caplog.at_level(logging.WARNING):
        path = models.resolve("lid", f"{server.base}/lid.176.ftz")
    assert path.read_bytes() == lid_model.read_bytes()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(empty_cache / "locks" / f"{path.name}.lock") in warnings[0].getMessage()


def test_other_lock_errors_still_raise(empty_cache, server, lid_model, monkeypatch):
    server.serve("/lid.176.ftz", lid_model.read_bytes())
    monkeypatch.setattr(fcntl, "flock", _flock_raising(errno.EBADF))
    with pytest.raises(OSError) as e:
        models.resolve("lid", f"{server.base}/lid.176.ftz")
    assert e.value.errno == errno.EBADF and server.hits == {}


def test_a_corrupt_download_leaves_the_cache(empty_cache, server, lid_model):
    # A wrong URL (a web page instead of the file) gives a 200 with HTML; it must not stay cached for ever.
    url = server.serve("/model.bin", b"<html><body>Sign in to download</body></html>" * 20)
    with pytest.raises(UserError) as e:
        LanguageIDFilter(model=url).setup()
    assert "(a download) is not a fastText model" in str(e.value) and "removed it from the cache" in str(e.value)
    server.serve("/model.bin", lid_model.read_bytes())  # the URL fixed on the server's side
    LanguageIDFilter(model=url).setup()


def test_fetch_lid_keeps_no_broken_model(empty_cache, tiny_kenlm, tmp_path, capsys):
    out = tmp_path / "lid.bin"
    argv = ["model", "fetch-lid", "--path", str(tiny_kenlm), "--out", str(out)]
    assert beam_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lid model") and "not a fastText model" in err and "\n" not in err
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
    assert beam_main(argv) == 2  # not "exists, skipped"


def test_cli_truncated_url_model_is_one_error_line(empty_cache, server, tiny_quality, tmp_path):
    server.serve("/short/quality.bin", tiny_quality.read_bytes(), "short")
    (tmp_path / "s.txt").write_text("Some sample prose about rivers.\n")
    for url in (f"{server.base}/short/quality.bin", f"{server.base}/missing.bin"):
        r = subprocess.run([sys.executable, "-m", "gristmill.pipeline.cli", "model", "calibrate-classifier",
                            "--model", url, "--sample", str(tmp_path / "s.txt")], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "GRISTMILL_CACHE": str(empty_cache)})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)


# --- which label is the score ---

def test_quality_label_with_or_without_prefix_and_unknown_labels(tiny_quality, as_docs):
    import fasttext  # the peer: its own predict, outside gristmill

    assert sorted(_fasttext_labels(tiny_quality)) == ["__label__cc", "__label__hq"]  # DCLM's labels
    docs = as_docs(["The river rises in the hills and runs through the valley to the sea.", "buy cheap now click"])
    plain, prefixed = QualityFilter(model=str(tiny_quality)), QualityFilter(model=str(tiny_quality), label="__label__hq")
    scores = [[v.scores["quality.score"] for v in f.check_batch(docs)] for f in (plain, prefixed)]
    model = fasttext.load_model(str(tiny_quality))
    expected = []
    for d in docs:  # fastText's own probability of __label__hq, on the same one-line lowercased text
        labels, probs = model.predict([" ".join(d.text.lower().split())], k=-1)
        expected.append(float(dict(zip(labels[0], probs[0]))["__label__hq"]))
    assert scores[0] == scores[1] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(UserError, match=r"quality: model .* has no label 'good' \(its labels: (hq, cc|cc, hq)\)"):
        QualityFilter(model=str(tiny_quality), label="good").setup()


def test_calibrate_classifier_refuses_a_label_the_model_lacks(tiny_quality, tmp_path, capsys):
    model = tmp_path / "q.bin"
    shutil.copyfile(tiny_quality, model)
    (tmp_path / "s.txt").write_text("Some sample prose about rivers.\n")
    argv = ["model", "calibrate-classifier", "--model", str(model), "--sample", str(tmp_path / "s.txt")]
    assert beam_main(argv + ["--label", "positive"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no label 'positive'" in err and "\n" not in err
    assert not models.sidecar(model, ".quantiles.json").exists()


def test_language_id_refuses_languages_the_model_does_not_name(lid_model):
    assert "__label__en" in _fasttext_labels(lid_model) and "__label__eng_Latn" not in _fasttext_labels(lid_model)
    with pytest.raises(UserError, match="language_id: .* has no label 'eng_Latn' .*give languages as it names them"):
        LanguageIDFilter(languages=["eng_Latn"], model=str(lid_model)).setup()
    flt = LanguageIDFilter(languages=["__label__en"], model=str(lid_model))
    flt.setup()
    assert flt.languages == ("en",)


def _unwritable_folder(tmp_path) -> Path:
    """A folder the OS refuses to create anything in: a read-only one (chmod), or /sys where chmod does not bind
    (root): sysfs refuses a new folder even to root."""
    folder = tmp_path / "read-only-cache"
    (folder / "downloads").mkdir(parents=True)
    for sub in (folder / "downloads", folder):
        sub.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "locks").mkdir()
        except OSError:
            return candidate
        (candidate / "locks").rmdir()
    for sub in (folder, folder / "downloads"):
        sub.chmod(0o755)
    pytest.skip("no folder here refuses writes")


def test_a_read_only_cache_is_one_error_line_before_any_download(tmp_path, monkeypatch, server, lid_model):
    server.serve("/lid.176.ftz", lid_model.read_bytes())
    monkeypatch.setenv("GRISTMILL_CACHE", str(_unwritable_folder(tmp_path)))
    try:
        with pytest.raises(UserError) as e:
            models.resolve("lid", f"{server.base}/lid.176.ftz")
    finally:
        (tmp_path / "read-only-cache").chmod(0o755)
        (tmp_path / "read-only-cache" / "downloads").chmod(0o755)
    assert "cannot be written" in str(e.value) and "GRISTMILL_CACHE" in str(e.value) and "\n" not in str(e.value)
    assert server.hits == {}  # nothing fetched that could not be kept


def _big_sparse_model(path: Path, rows: int, dim: int = 100) -> None:
    """A whole supervised fastText .bin, written field by field as FastText::saveModel does (fastText 0.9.3's
    args.cc, dictionary.cc, densematrix.cc), whose input matrix is `rows` x `dim` zeros left as a hole."""
    import struct

    with open(path, "wb") as f:
        f.write(struct.pack("<ii", models.FASTTEXT_MAGIC, 12))
        f.write(struct.pack("<12id", dim, 5, 5, 1, 5, 1, 3, 3, rows - 3, 0, 0, 100, 1e-4))  # softmax, supervised
        f.write(struct.pack("<iiiqq", 3, 1, 2, 1000, -1))
        for word, kind in ((b"w", 0), (b"__label__a", 1), (b"__label__b", 1)):
            f.write(word + b"\0" + struct.pack("<qb", 10, kind))
        f.write(struct.pack("<?qq", False, rows, dim))
        f.seek(f.tell() + 4 * rows * dim)
        f.write(struct.pack("<?qq", False, 2, dim) + bytes(4 * 2 * dim))


@pytest.mark.parametrize("where", ["size check", "fastText"])
def test_a_download_too_big_for_memory_stays_cached_and_is_one_line(empty_cache, where):
    # A whole model that does not fit under the process's memory limit is no corrupt model: it must not be
    # deleted from the cache (to be downloaded again, gigabytes, by every later run) nor end in a traceback.
    path = empty_cache / "downloads" / "0123456789ab-big.bin"
    path.parent.mkdir(parents=True)
    _big_sparse_model(path, rows=250_000)  # 100 MB
    assert models.fasttext_size(path) == path.stat().st_size
    stub = "models.fasttext_size = lambda p: os.path.getsize(p)\n" if where == "fastText" else ""
    code = ("import os, resource\nfrom gristmill.filters import models\nfrom gristmill.errors import UserError\n"
            "import fasttext\n" + stub +
            "used = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
            "resource.setrlimit(resource.RLIMIT_AS, (used + 50 * 2**20, resource.RLIM_INFINITY))\n"
            f"try:\n    models.load_fasttext('quality', {str(path)!r})\nexcept UserError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GRISTMILL_CACHE": str(empty_cache)})
    assert r.returncode == 0 and "does not fit in this process's memory" in r.stdout, (r.stdout, r.stderr[-800:])
    assert path.is_file()
