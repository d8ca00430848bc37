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
    assert err.startswith("error: cannot write /dev/null/x") and err.endswith("/dev/null is not a folder"), err
    assert "\n" not in err
    if command != "fetch-url-lists":  # its --out is a folder
        assert beam_main(["model", command, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: output {tmp_path} is a folder: give the path of the file to write"
