"""`mix build` and `mix sweep`: manifest contents, the LLaMA-1 table, errors, determinism."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.cli import main
from gristmill.mixtures.spec import load_spec, parse_count
from manifest_edit import DROP, edit

# LLaMA-1 (Touvron et al. 2023), Table 1: sampling proportion, epochs at 1.4T tokens, disk size.
LLAMA_TABLE = """\
Dataset        Sampling prop.  Epochs  Disk size
CommonCrawl             67.0%    1.10     3.3 TB
C4                      15.0%    1.06     783 GB
Github                   4.5%    0.64     328 GB
Wikipedia                4.5%    2.45      83 GB
Books                    4.5%    2.23      85 GB
ArXiv                    2.5%    1.06      92 GB
StackExchange            2.0%    1.03      78 GB
"""
# Source sizes in tokens, to 0.1B: the paper gives none, these are proportion x 1.4T / epochs rounded.
LLAMA_SOURCES = [
    ("CommonCrawl", 0.670, 852.7e9, 3.3e12),
    ("C4", 0.150, 198.1e9, 783e9),
    ("Github", 0.045, 98.4e9, 328e9),
    ("Wikipedia", 0.045, 25.7e9, 83e9),
    ("Books", 0.045, 28.3e9, 85e9),
    ("ArXiv", 0.025, 33.0e9, 92e9),
    ("StackExchange", 0.020, 27.2e9, 78e9),
]


def fake_manifest(folder: Path, name: str, tokens: int, disk: int, sha: str = "cd" * 32) -> Path:
    """A manifest of a corpus too large to write: counts only, with an empty file for the one shard."""
    folder.mkdir(parents=True)
    (folder / "train-00000.arrow").touch()
    shard = {"path": "train-00000.arrow", "sequences": tokens // 2048, "tokens": tokens, "documents": 1,
             "bytes_on_disk": disk, "text_bytes": 4 * tokens}
    split = {k: shard[k] for k in ("sequences", "tokens", "documents")} | {"bytes": 4 * tokens, "shards": [shard]}
    empty = {"sequences": 0, "tokens": 0, "documents": 0, "bytes": 0, "shards": []}
    manifest = {"format": "gristmill.tokens/1", "source": name, "domain": name.lower(), "seq_len": 2048,
                "tokenizer": {"path": "tokenizer.json", "sha256": sha, "vocab_size": 32000, "bos_id": 1,
                              "eos_id": 2, "pad_id": 0},
                "recipe_sha256": "0" * 64, "seed": 0, "splits": {"train": split, "validation": empty}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def test_llama1_mixture(tmp_path, spec_file, capsys):
    sources = []
    for name, p, tokens, disk in LLAMA_SOURCES:
        fake_manifest(tmp_path / name, name, int(tokens), int(disk))
        sources.append({"name": name, "manifest": name})
    spec = spec_file({
        "sources": sources, "budget_tokens": "1.4T", "seed": 0,
        "weighting": {"method": "explicit", "proportions": {n: p for n, p, _, _ in LLAMA_SOURCES}},
    })
    out = tmp_path / "llama.json"
    assert main(["build", str(spec), "-o", str(out)]) == 0
    assert capsys.readouterr().out == LLAMA_TABLE
    mixture = json.loads(out.read_text())
    for entry, (name, p, tokens, _) in zip(mixture["sources"], LLAMA_SOURCES):
        assert entry["name"] == name and entry["proportion"] == pytest.approx(p, rel=1e-12)
        assert entry["epochs"] == pytest.approx(p * 1.4e12 / tokens, rel=1e-12)
        assert entry["tokens_available"] == tokens
        assert abs(entry["tokens_to_draw"] - p * 1.4e12) <= 1
    assert sum(e["tokens_to_draw"] for e in mixture["sources"]) == 1_400_000_000_000
    md = out.with_suffix(".md").read_text()
    assert md.startswith("| Dataset | Sampling prop. | Epochs | Disk size |\n|:---|---:|---:|---:|\n")
    assert "| CommonCrawl | 67.0% | 1.10 | 3.3 TB |" in md and "| StackExchange | 2.0% | 1.03 | 78 GB |" in md


def test_manifest_fields(tmp_path, spec_file, datasets):
    out = tmp_path / "sub" / "mix.json"
    assert main(["build", str(spec_file()), "-o", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["format"] == "gristmill.mixture/1" and m["seed"] == 7 and m["seq_len"] == 8
    assert m["budget_tokens"] == 4000 and m["budget_sequences"] == 500
    assert m["tokenizer"]["sha256"] == "ab" * 32
    assert (out.parent / m["tokenizer"]["path"]).resolve() == (datasets / "web" / "tokenizer.json").resolve()
    by = {s["name"]: s for s in m["sources"]}
    assert [s["name"] for s in m["sources"]] == ["web", "news", "wiki"]
    assert by["news"]["domain"] == "web"  # taken from the dataset's manifest
    assert {n: s["tokens_available"] for n, s in by.items()} == {"web": 300 * 8, "news": 120 * 8, "wiki": 40 * 8}
    assert {n: s["tokens_to_draw"] for n, s in by.items()} == {"web": 2000, "news": 1200, "wiki": 800}
    assert by["wiki"]["epochs"] == pytest.approx(0.2 * 4000 / 320)
    # paths are relative to the mixture's folder and point at the real files
    assert all(not Path(sh["path"]).is_absolute() for sh in by["web"]["shards"])
    for s in m["sources"]:
        assert (out.parent / s["manifest"]).resolve() == (datasets / s["name"] / "manifest.json").resolve()
        assert [sh["sequences"] for sh in s["shards"]] == {"web": [200, 100], "news": [120], "wiki": [40]}[s["name"]]
        assert all((out.parent / sh["path"]).is_file() for sh in s["shards"])
    assert set(m["validation"]) == {"web", "reference"}
    assert [e["name"] for e in m["validation"]["web"]["sources"]] == ["web", "news"]
    assert m["validation"]["web"]["sequences"] == 50 and m["validation"]["reference"]["sequences"] == 10


def test_build_is_deterministic(tmp_path, spec_file):
    spec = spec_file()
    for name in ("a.json", "b.json"):
        assert main(["build", str(spec), "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()


def test_relative_manifest_paths_resolve_against_spec_folder(tmp_path, spec_dict, datasets, monkeypatch):
    nested = tmp_path / "specs"
    nested.mkdir()
    for src in spec_dict["sources"]:
        src["manifest"] = os.path.relpath(src["manifest"], nested)
    path = nested / "s.yaml"
    path.write_text(json.dumps(spec_dict))  # JSON is YAML
    monkeypatch.chdir(datasets)  # not the spec's folder
    spec = load_spec(path)
    assert spec.sources[0].manifest == (datasets / "web").resolve()
    assert mixbuild.build(spec, tmp_path / "m.json")["sources"][2]["tokens_available"] == 320


def test_temperature_and_unimax_methods(tmp_path, spec_dict):
    spec_dict["weighting"] = {"method": "temperature", "temperature": 2.0}
    from gristmill.mixtures.spec import spec_from_dict

    m = mixbuild.build(spec_from_dict(spec_dict, tmp_path), tmp_path / "t.json")
    n = np.array([2400, 960, 320]) ** 0.5
    assert [s["proportion"] for s in m["sources"]] == pytest.approx(list(n / n.sum()), rel=1e-12)

    # UniMax with a 3-epoch cap: uniform share 4000/3 tokens; wiki capped at 3 x 320 = 960;
    # the other two split 3040 evenly (1520 each, under web's 7200 and news's 2880 caps).
    spec_dict["weighting"] = {"method": "unimax", "max_epochs": 3}
    m = mixbuild.build(spec_from_dict(spec_dict, tmp_path), tmp_path / "u.json")
    assert [s["tokens_to_draw"] for s in m["sources"]] == [1520, 1520, 960]
    assert [s["epochs"] for s in m["sources"]] == pytest.approx([1520 / 2400, 1520 / 960, 3.0])

    # a per-source token cap overrides: news may give at most 1000 tokens
    spec_dict["sources"][1]["max_tokens"] = 1000
    m = mixbuild.build(spec_from_dict(spec_dict, tmp_path), tmp_path / "u2.json")
    assert [s["tokens_to_draw"] for s in m["sources"]] == [2040, 1000, 960]


def test_validation_cap_takes_even_share(tmp_path, spec_dict):
    from gristmill.mixtures.spec import spec_from_dict

    spec_dict["validation"] = {"max_sequences": 10}
    m = mixbuild.build(spec_from_dict(spec_dict, tmp_path), tmp_path / "v.json")
    web = m["validation"]["web"]
    assert web["sequences"] == 10
    assert [(e["name"], e["sequences"], e["sequences_available"]) for e in web["sources"]] == [
        ("web", 6, 30), ("news", 4, 20)
    ]
    assert m["validation"]["reference"]["sequences"] == 10


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_error_proportions_sum(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["weighting"]["proportions"]["wiki"] = 0.1
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "sum to 0.9, not 1" in err and "normalize: true" in err
    spec_dict["weighting"]["normalize"] = True
    assert main(["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert [s["proportion"] for s in m["sources"]] == pytest.approx([5 / 9, 3 / 9, 1 / 9])


def test_error_unknown_source(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["weighting"]["proportions"]["books"] = 0.0
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "unknown source 'books'" in err


def test_error_missing_manifest(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["sources"][2]["manifest"] = str(tmp_path / "nowhere")
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'wiki'" in err and "nowhere" in err


def test_error_empty_source(tmp_path, spec_dict, spec_file, make_dataset, capsys):
    make_dataset(tmp_path / "empty", "empty", "web", [])
    spec_dict["sources"].append({"name": "empty", "manifest": str(tmp_path / "empty")})
    spec_dict["weighting"]["proportions"]["empty"] = 0.0
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'empty' is empty" in err


def test_error_epoch_cap_names_source(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["sources"][2]["max_epochs"] = 2  # wiki needs 0.2 x 4000 / 320 = 2.5 epochs
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'wiki' needs 2.5 epochs" in err and "max_epochs is 2" in err
    spec_dict["sources"][2]["max_epochs"] = None
    spec_dict["sources"][1]["max_tokens"] = 1000  # news needs 1200
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'news' needs 1,200 tokens" in err and "max_tokens is 1,000" in err


def test_error_unimax_over_caps(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["weighting"] = {"method": "unimax", "max_epochs": 1}  # caps total 3680 < 4000
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "needs more epochs than the caps allow" in err and "wiki, news, web" in err


def test_error_tokenizer_mismatch(tmp_path, spec_dict, spec_file, make_dataset, capsys):
    make_dataset(tmp_path / "other", "other", "web", [10], tokenizer_sha="ef" * 32)
    spec_dict["sources"][1]["manifest"] = str(tmp_path / "other")
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'news' was tokenized with tokenizer efefefefefef" in err and "source 'web' with abababababab" in err


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"weighting": {"method": "softmax"}}, "weighting.method must be one of"),
        ({"weighting": {"method": "temperature"}}, "needs weighting.temperature"),
        ({"budget_tokens": "lots"}, "budget_tokens must be a whole number"),
        ({"seed": -1}, "seed must be an integer"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_spec_errors(tmp_path, spec_dict, spec_file, capsys, patch, message):
    spec_dict.update(patch)
    assert message in one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])


def test_a_budget_under_one_sequence_is_refused(tmp_path, spec_dict, spec_file, capsys):
    spec_dict["budget_tokens"] = 7  # seq_len is 8: such a mixture had budget_sequences 0, and no batch to give
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "budget_tokens 7 is less than one sequence (8 tokens)" in err
    assert not (tmp_path / "m.json").exists()


def test_a_manifest_given_as_the_spec_is_named(tmp_path, datasets, spec_file, capsys):
    """A token dataset's or a mixture's manifest in place of the spec read as "unknown key 'domain'"."""
    err = one_line_error(capsys, ["build", str(datasets / "web" / "manifest.json"), "-o", str(tmp_path / "m.json")])
    assert "is a gristmill.tokens/1 manifest, not a mixture spec" in err
    assert main(["build", str(spec_file()), "-o", str(tmp_path / "m.json")]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, ["build", str(tmp_path / "m.json"), "-o", str(tmp_path / "again.json")])
    assert "is a gristmill.mixture/1 manifest, not a mixture spec" in err


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, spec_file, capsys):
    """These were IsADirectoryError / FileExistsError tracebacks, after the whole build."""
    spec = str(spec_file())
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    assert "is a folder" in one_line_error(capsys, ["build", spec, "-o", str(tmp_path / "folder")])
    assert "file is a file, not a folder" in one_line_error(capsys, ["build", spec, "-o", str(tmp_path / "file" / "m.json")])
    assert "is a file, not a folder" in one_line_error(capsys, ["sweep", spec, "-n", "2", "-o", str(tmp_path / "file")])


def test_a_read_only_output_folder_is_one_line(tmp_path, spec_file, capsys, monkeypatch):
    import os

    real = os.access
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real(p, mode, **kw))
    err = one_line_error(capsys, ["build", str(spec_file()), "-o", str(ro / "m.json")])
    assert f"cannot write {ro / 'm.json'}: {ro} is not writable" in err


def test_missing_spec_file(tmp_path, capsys):
    assert "does not exist" in one_line_error(capsys, ["build", str(tmp_path / "none.yaml"), "-o", "x.json"])
    # one that exists but is no file (/dev/null, a pipe) was said not to exist
    assert one_line_error(capsys, ["build", "/dev/null", "-o", "x.json"]) == "error: spec file /dev/null is not a file\n"


def test_parse_count():
    assert parse_count("1.4T", "b") == 1_400_000_000_000
    assert parse_count("20M", "b") == 20_000_000 and parse_count(1e9, "b") == 10**9 and parse_count(5, "b") == 5
    with pytest.raises(UserError):
        parse_count("1.5", "b")


def test_sweep(tmp_path, spec_file, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec_file()), "-n", "4", "-o", str(out), "--concentration", "20"]) == 0
    assert "mixture-003" in capsys.readouterr().out
    index = json.loads((out / "sweep.json").read_text())
    assert index["format"] == "gristmill.sweep/1" and index["n"] == 4 and index["seed"] == 7
    assert index["prior_proportions"] == {"web": 0.5, "news": 0.3, "wiki": 0.2}
    assert [m["path"] for m in index["mixtures"]] == [f"mixture-{k:03d}.json" for k in range(4)]
    for entry in index["mixtures"]:
        m = json.loads((out / entry["path"]).read_text())
        assert m["format"] == "gristmill.mixture/1" and m["weighting"]["method"] == "dirichlet"
        props = [s["proportion"] for s in m["sources"]]
        assert props == [entry["proportions"][n] for n in ("web", "news", "wiki")]
        assert math.fsum(props) == pytest.approx(1.0) and len(set(props)) == 3
        assert (out / entry["path"]).with_suffix(".md").is_file()
    # same seed, same files; a different seed, different draws
    again = tmp_path / "again"
    assert main(["sweep", str(spec_file()), "-n", "4", "-o", str(again), "--concentration", "20"]) == 0
    for f in sorted(p.name for p in out.iterdir()):
        assert (out / f).read_bytes() == (again / f).read_bytes()
    other = mixbuild.sweep(load_spec(spec_file()), 1, tmp_path / "o", concentration=20, seed=8)
    assert other["mixtures"][0]["proportions"] != index["mixtures"][0]["proportions"]


def test_sweep_draws_follow_the_dirichlet(tmp_path, spec_dict):
    """Mean and variance of many draws match Dirichlet(a p): mean p_i, var p_i(1-p_i)/(a+1)."""
    from gristmill.mixtures.spec import spec_from_dict

    spec_dict["budget_tokens"] = 100  # no cap can bind
    spec = spec_from_dict(spec_dict, tmp_path)
    index = mixbuild.sweep(spec, 300, tmp_path / "s", concentration=9.0, prior="natural")
    draws = np.array([[m["proportions"][n] for n in ("web", "news", "wiki")] for m in index["mixtures"]])
    p = np.array([300, 120, 40]) / 460
    se = np.sqrt(p * (1 - p) / 10 / len(draws))
    assert np.all(np.abs(draws.mean(0) - p) < 4 * se)
    assert draws.var(0) == pytest.approx(p * (1 - p) / 10, rel=0.35)


def test_sweep_redraws_over_cap(tmp_path, spec_dict):
    from gristmill.mixtures.spec import spec_from_dict

    spec_dict["sources"][2]["max_epochs"] = 2.6  # wiki at 0.2 needs 2.5 epochs: many draws break the cap
    spec = spec_from_dict(spec_dict, tmp_path)
    index = mixbuild.sweep(spec, 20, tmp_path / "s", concentration=5.0)
    assert index["rejected_draws"] > 0
    assert all(m["proportions"]["wiki"] * 4000 / 320 <= 2.6 for m in index["mixtures"])


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "mix build mixture.yaml -o" in capsys.readouterr().out
    for cmd in ("build", "sweep"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert f"mix {cmd} mixture.yaml" in capsys.readouterr().out


def test_remote_source_without_its_filesystem_is_one_line(tmp_path, spec_dict, spec_file):
    """In a fresh process, so Beam's import-time logging (its note on optional GCP libraries) would show."""
    import subprocess
    import sys

    spec_dict["sources"][0]["manifest"] = "nofs://bucket/tokens"
    r = subprocess.run([sys.executable, "-c", "import sys; from gristmill.mixtures.cli import main; sys.exit(main())",
                        "build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == ("error: source 'web': no Beam filesystem for nofs:// paths (nofs://bucket/tokens): "
                        "install the Beam extra that provides it\n"), r.stderr


@pytest.mark.parametrize("path, value, message", [
    (("splits", "train", "shards", 0, "bytes_on_disk"), DROP, "has no sequences, tokens or bytes_on_disk"),
    (("seq_len",), DROP, "seq_len is None"),
    (("splits", "train", "shards"), DROP, "split 'train' has no list of shards"),
    (("tokenizer",), DROP, "no tokenizer object"),
    (("tokenizer", "vocab_size"), "1000", "tokenizer.vocab_size is '1000'"),
    (("splits",), [], "splits is not an object"),
    (("splits", "train", "sequences"), "many", "manifest sequence totals do not match the shards"),
    (("splits", "train", "tokens"), 1, "manifest token totals do not match the shards"),
    (("splits", "train", "shards", 0, "sequences"), -1, "sequences is -1, not a count"),
    (("splits", "train", "shards", 0, "path"), "/etc/passwd", "not a file name in the dataset folder"),
])
def test_an_edited_dataset_manifest_is_one_line(tmp_path, spec_dict, spec_file, make_dataset, capsys, path, value,
                                                message):
    mpath = make_dataset(tmp_path / "edited", "edited", "web", [10, 5])
    m = json.loads(mpath.read_text())
    edit(m, path, value)
    mpath.write_text(json.dumps(m))
    spec_dict["sources"][2]["manifest"] = str(mpath)
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'wiki'" in err and message in err


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe{}"])
def test_a_dataset_manifest_that_is_no_json_object_is_one_line(tmp_path, spec_dict, spec_file, make_dataset, capsys,
                                                               content):
    mpath = make_dataset(tmp_path / "edited", "edited", "web", [10])
    mpath.write_bytes(content)
    spec_dict["sources"][2]["manifest"] = str(mpath)
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'wiki'" in err and str(mpath) in err
