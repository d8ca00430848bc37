"""User mistakes give one clear line and a non-zero exit, never a traceback; every command has --help."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.errors import UserError
from gristmill.pipeline.recipe import load_recipe
from gristmill.pipeline.runner import pipeline_options

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def beam(*args, cwd=ROOT):
    return subprocess.run([str(BIN / "beam"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_one_line_error(r, fragment):
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


def test_missing_input(tmp_path):
    r = beam("run", "recipes/cc_en.py", "--input", str(tmp_path / "nothing-*.warc.gz"), "--output", str(tmp_path / "o"))
    assert_one_line_error(r, "no input files match")


def test_missing_recipe(tmp_path):
    assert_one_line_error(beam("run", str(tmp_path / "nope.py")), "does not exist")


def test_recipe_with_syntax_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def stages(p):\n    return [\n")
    assert_one_line_error(beam("run", str(bad)), "syntax error")


def test_unknown_beam_flag(tmp_path):
    r = beam("run", "recipes/cc_en.py", "--no_such_beam_option=3", "--input", str(ROOT / "pyproject.toml"))
    assert_one_line_error(r, "--no_such_beam_option")


def test_unknown_recipe_parameter(tmp_path):
    assert_one_line_error(beam("run", "recipes/cc_en.py", "-p", "colour=blue"), "no parameter 'colour'")


def test_mistakes_are_reported_before_the_sample_crawl_is_generated(tmp_path):
    # With no --input, `beam run` would first generate the bundled sample into an empty cache.
    env = {**os.environ, "GRISTMILL_CACHE": str(tmp_path / "cache")}
    for args, fragment in ((["--no_such_beam_option=3"], "--no_such_beam_option"),
                           (["-p", "filter_mode=sometimes"], "filter_mode must be"),
                           (["-p", "doc_shards=0"], "shards must be >= 1")):
        r = subprocess.run([str(BIN / "beam"), "run", "recipes/cc_en.py", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert_one_line_error(r, fragment)
    assert not (tmp_path / "cache").exists()


def test_empty_recipe_and_recipe_without_stages(tmp_path):
    (tmp_path / "none.py").write_text("PARAMS = {}\n")
    assert_one_line_error(beam("run", str(tmp_path / "none.py")), "must define a function stages(p)")
    (tmp_path / "empty.py").write_text("def stages(p):\n    return []\n")
    assert_one_line_error(beam("run", str(tmp_path / "empty.py"), "--input", str(ROOT / "pyproject.toml")),
                          "no stages")


def test_parameter_types():
    r = load_recipe(str(ROOT / "recipes" / "cc_en.py"), ["doc_shards=7", "language=fr"])
    assert r.params["doc_shards"] == 7 and r.params["language"] == "fr"
    with pytest.raises(UserError, match="parameter doc_shards='many': expected an integer"):
        load_recipe(str(ROOT / "recipes" / "cc_en.py"), ["doc_shards=many"])
    with pytest.raises(UserError, match="parameter dedup='maybe': expected true or false"):
        load_recipe(str(ROOT / "recipes" / "cc_en.py"), ["dedup=maybe"])
    with pytest.raises(UserError, match="expected a number"):
        load_recipe(str(ROOT / "recipes" / "cc_en.py"), ["lid_threshold=high"])


@pytest.mark.parametrize("param, message", [
    ("lid_threshold=nan", "parameter lid_threshold='nan': expected a number, not NaN"),
    ("lid_threshold=1.5", "stage LanguageID: threshold is a probability, from 0 to 1, not 1.5"),
    ("toxicity_threshold=-0.1", "stage Toxicity: threshold is a probability, from 0 to 1, not -0.1"),
    ("quality_threshold=inf", "stage Quality: threshold is a probability, from 0 to 1, not inf"),
])
def test_a_probability_threshold_out_of_range_is_one_line(param, message):
    with pytest.raises(UserError) as e:
        load_recipe(str(ROOT / "recipes" / "cc_en.py"), [param]).stages()
    assert str(e.value) == message
    assert load_recipe(str(ROOT / "recipes" / "cc_en.py"), ["lid_threshold=1"]).stages()  # the bounds are fine


def test_local_defaults_never_use_the_downloading_direct_runner():
    opts = pipeline_options([], num_workers=2).get_all_options()
    assert opts["runner"] == "FnApiRunner"
    assert opts["direct_num_workers"] == 2 and opts["direct_running_mode"] == "multi_processing"
    mine = pipeline_options(["--direct_num_workers=1", "--direct_running_mode=in_memory"]).get_all_options()
    assert mine["direct_num_workers"] == 1 and mine["direct_running_mode"] == "in_memory"


def _subcommands(help_text: str) -> list[str]:
    """Subcommand names listed under 'positional arguments' (argparse indents them by four spaces)."""
    block = help_text.split("positional arguments:", 1)[1].split("\n\n", 1)[0] if "positional arguments:" in help_text else ""
    return re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", block, flags=re.M)


@pytest.mark.parametrize("cmd", ["beam", "mix", "trainer"])
def test_every_command_and_subcommand_has_help_with_an_example(cmd):
    def check(*words, depth=0):
        r = subprocess.run([str(BIN / cmd), *words, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "example" in r.stdout.lower(), f"{cmd} {' '.join(words)} --help:\n{r.stdout}{r.stderr}"
        subs = _subcommands(r.stdout)
        if depth < 2:
            for sub in subs:
                check(*words, sub, depth=depth + 1)
        return subs

    assert check(), f"{cmd} lists no subcommands"


def test_a_run_that_leaves_nothing_to_tokenize_says_so(tmp_path):
    # Not a WARC file: Read counts it as bad, no document reaches TrainTokenizer. The run ends with the table and
    # one error line, not a worker's traceback.
    bad = tmp_path / "notes.json"
    bad.write_text('{"not": "a warc"}\n')
    r = beam("run", "recipes/cc_en.py", "--input", str(bad), "--output", str(tmp_path / "o"), "--direct_num_workers=2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.strip() and "apitools" not in l]
    assert lines[-1].startswith("error: stage Tokenize: no document reached the tokenizer's training sample")
    assert any(l.startswith("Read ") and "bad:not_warc 1" in l for l in lines)


def test_an_output_no_filesystem_serves_is_one_line(tmp_path):
    r = beam("run", "recipes/cc_en.py", "--output", "nosuchfs://bucket/out")
    assert_one_line_error(r, "no Beam filesystem for nosuchfs:// paths (nosuchfs://bucket/out)")


def test_a_user_error_inside_a_worker_is_its_own_line(tmp_path):
    from warc_factory import write_warc

    write_warc(tmp_path / "c.warc.gz", n=5)
    r = beam("run", str(Path(__file__).with_name("recipe_worker_error.py")), "--input", str(tmp_path / "c.warc.gz"),
             "--output", str(tmp_path / "o"), "--direct_running_mode=in_memory", "--direct_num_workers=1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.strip() and "apitools" not in l]
    assert lines[-1].startswith("error: stage Refuse: page ") and "needs a setting this recipe lacks" in lines[-1]
    assert not any("UserError" in l for l in lines), lines  # not Beam's wrapped exception, not its worker log


def test_a_user_error_in_a_worker_process_ends_the_run_with_its_line(tmp_path):
    # Worker processes wrap it in a RuntimeError whose text holds the worker's traceback (their own logs still
    # reach stderr); the last line is the mistake itself.
    from warc_factory import write_warc

    write_warc(tmp_path / "c.warc.gz", n=5)
    r = beam("run", str(Path(__file__).with_name("recipe_worker_error.py")), "--input", str(tmp_path / "c.warc.gz"),
             "--output", str(tmp_path / "o"), "--direct_running_mode=multi_processing", "--direct_num_workers=1")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and lines[-1].startswith("error: stage Refuse: page "), r.stderr[-3000:]


@pytest.mark.parametrize("command, flags, fragment", [
    ("run", ["--output", "{file}"], "is a file, not a folder"),
    ("run", ["--output", "{file}/sub"], "is a file"),
    ("select", ["--output", "{file}"], "is a file, not a folder"),
    ("summarize", ["--output", "{file}"], "is a file, not a folder"),
    ("run", ["--workers=-3"], "--workers must be >= 0"),
    ("select", ["--workers=-1"], "--workers must be >= 0"),
    ("run", ["--direct_num_workers=abc"], "--direct_num_workers: invalid int value: 'abc'"),
    ("summarize", ["--direct_num_workers=-2"], "--direct_num_workers must be >= 0"),
    ("select", ["--output", "{run}"], "the folder this run writes its documents to"),
])
def test_bad_output_and_worker_flags_are_one_line(tmp_path, capsys, command, flags, fragment):
    from gristmill.pipeline.cli import main
    from gristmill.pipeline.document import Document
    from warc_factory import write_warc

    write_warc(tmp_path / "c.warc.gz", n=2)
    (tmp_path / "run" / "documents").mkdir(parents=True)
    docs = tmp_path / "run" / "documents" / "part-00000-of-00001.jsonl"
    docs.write_text(Document(id="a", url="u", text="hello").to_json() + "\n")
    (tmp_path / "afile").write_text("not a folder")
    flags = [f.format(file=tmp_path / "afile", run=tmp_path / "run") for f in flags]
    if "--output" not in flags:
        flags += ["--output", str(tmp_path / "out")]
    args = {"run": ["run", str(Path(__file__).with_name("recipe_read_extract.py")), "--input", str(tmp_path / "c.warc.gz")],
            "select": ["select", str(docs), "--where", "chars > 0"],
            "summarize": ["summarize", str(docs)]}[command]
    assert main([*args, *flags]) != 0
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert docs.is_file()


@pytest.mark.parametrize("command", ["run", "select", "summarize"])
def test_an_input_naming_a_folder_is_one_line_suggesting_a_glob(tmp_path, capsys, command):
    from gristmill.pipeline.cli import main
    from gristmill.pipeline.document import Document
    from warc_factory import write_warc

    # `--input crawl` for 'crawl/*.warc.gz': the reader cannot open a folder (run: a traceback from the worker;
    # select and summarize: an empty output, the folder counted as one unreadable file).
    (tmp_path / "crawl").mkdir()
    write_warc(tmp_path / "crawl" / "c.warc.gz", n=2)
    (tmp_path / "run" / "documents").mkdir(parents=True)
    (tmp_path / "run" / "documents" / "part-00000-of-00001.jsonl.gz").write_bytes(b"")
    args = {"run": ["run", str(Path(__file__).with_name("recipe_read_extract.py")), "--input", str(tmp_path / "crawl")],
            "select": ["select", str(tmp_path / "run" / "documents"), "--where", "chars > 0"],
            "summarize": ["summarize", str(tmp_path / "run" / "documents")]}[command]
    glob = {"run": tmp_path / "crawl" / "*.warc.gz"}.get(command, tmp_path / "run" / "documents" / "*.jsonl.gz")
    assert main([*args, "--output", str(tmp_path / "out"), "--direct_running_mode=in_memory"]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "names the folder" in lines[0] and f"'{glob}'" in lines[0]
    assert not (tmp_path / "out").exists()
