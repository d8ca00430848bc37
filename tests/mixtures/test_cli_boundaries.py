"""mix build and mix sweep at their edges, against the rules of docs/mixtures.md: a count of mixtures under one and
sources of two seq_lens refused as one line, the weighting record as the spec gives it, validation entries only for
sources with validation rows, the sweep's documented defaults (concentration 10, the spec's seed) and --seed against
mixbuild.sweep itself, its printed table recomputed from sweep.json: each test kills a mutation of
build.py or cli.py that the rest of the suite let through."""
from __future__ import annotations

import json

from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.cli import main
from gristmill.mixtures.spec import load_spec


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_sweep_of_no_mixtures_is_refused_before_writing(tmp_path, spec_file, capsys):
    """-n 0 wrote a sweep.json listing no mixtures, which `trainer ablate --sweep` has nothing to run from."""
    out = tmp_path / "sweep"
    assert "-n must be >= 1, not 0" in one_line_error(capsys, ["sweep", str(spec_file()), "-n", "0", "-o", str(out)])
    assert not (out / "sweep.json").exists()
    assert main(["sweep", str(spec_file()), "-n", "1", "-o", str(out)]) == 0  # the smallest sweep is one mixture
    assert len(json.loads((out / "sweep.json").read_text())["mixtures"]) == 1


def test_sources_of_two_seq_lens_are_refused(tmp_path, spec_dict, spec_file, make_dataset, capsys):
    """Rows of another length cannot share a batch: the loader would read them as seq_len-long rows."""
    make_dataset(tmp_path / "long", "long", "web", [10], seq_len=16)
    spec_dict["sources"][1]["manifest"] = str(tmp_path / "long")
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'news' has seq_len 16, but source 'web' has 8: all sources must share one seq_len" in err
    assert not (tmp_path / "m.json").exists()


def test_the_weighting_record_is_the_spec_s_method_parameters_and_epoch_cap(tmp_path, spec_dict, spec_file):
    spec_dict["weighting"] = {"method": "temperature", "temperature": 2.0, "max_epochs": 40}
    mixture = mixbuild.build(load_spec(spec_file(spec_dict)), tmp_path / "m.json")
    assert mixture["weighting"] == {"method": "temperature", "temperature": 2.0, "max_epochs": 40}
    spec_dict["weighting"] = {"method": "explicit", "proportions": {"web": 0.5, "news": 0.3, "wiki": 0.2}}
    mixture = mixbuild.build(load_spec(spec_file(spec_dict)), tmp_path / "m.json")
    assert mixture["weighting"] == {"method": "explicit", "proportions": {"web": 0.5, "news": 0.3, "wiki": 0.2},
                                    "normalize": False, "max_epochs": None}


def test_a_source_without_validation_rows_is_not_in_its_domain_s_set(tmp_path, spec_dict, spec_file, make_dataset):
    make_dataset(tmp_path / "noval", "noval", "web", [30], 0, seed=4)
    spec_dict["sources"][1]["manifest"] = str(tmp_path / "noval")
    mixture = mixbuild.build(load_spec(spec_file(spec_dict)), tmp_path / "m.json")
    web = mixture["validation"]["web"]
    assert [e["name"] for e in web["sources"]] == ["web"] and web["sequences"] == 30  # the web fixture's 30 rows
    assert mixture["validation"]["reference"]["sequences"] == 10


def test_a_concentration_of_zero_or_not_finite_is_refused(tmp_path, spec_file, capsys):
    """Dirichlet(0 x prior) has no density: numpy draws from it without complaint, and gives no proportions."""
    for value in ("0", "-1", "inf", "nan"):
        argv = ["sweep", str(spec_file()), "-n", "1", "--concentration", value, "-o", str(tmp_path / "s")]
        assert f"--concentration must be > 0, not {float(value)}" in one_line_error(capsys, argv)
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_sweep_defaults_to_concentration_10_and_the_spec_s_seed_and_takes_seed(tmp_path, spec_file, capsys):
    spec = load_spec(spec_file())
    assert main(["sweep", str(spec_file()), "-n", "2", "-o", str(tmp_path / "d")]) == 0
    default = json.loads((tmp_path / "d" / "sweep.json").read_text())
    assert (default["concentration"], default["seed"], default["prior"]) == (10.0, 7, "spec")
    reference = mixbuild.sweep(spec, 2, tmp_path / "r", concentration=10.0, seed=7)
    assert default["mixtures"] == reference["mixtures"]
    assert main(["sweep", str(spec_file()), "-n", "2", "-o", str(tmp_path / "s8"), "--seed", "8"]) == 0
    seeded = json.loads((tmp_path / "s8" / "sweep.json").read_text())
    assert seeded["seed"] == 8
    assert seeded["mixtures"] == mixbuild.sweep(spec, 2, tmp_path / "r8", concentration=10.0, seed=8)["mixtures"]
    assert seeded["mixtures"] != default["mixtures"]


def test_sweep_prints_the_prior_then_each_mixture_as_percentages(tmp_path, spec_file, capsys):
    assert main(["sweep", str(spec_file()), "-n", "3", "-o", str(tmp_path / "s")]) == 0
    index = json.loads((tmp_path / "s" / "sweep.json").read_text())
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    names = ["web", "news", "wiki"]
    expected = [["mixture", *names], ["prior", "50.0%", "30.0%", "20.0%"]]
    expected += [[m["name"], *(f"{100 * m['proportions'][n]:.1f}%" for n in names)] for m in index["mixtures"]]
    assert rows == expected
