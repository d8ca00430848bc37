"""mix build and mix sweep at their edges, against the rules of docs/mixtures.md: a count of mixtures under one and
sources of two seq_lens refused as one line, the weighting record as the spec gives it, validation entries only for
sources with validation rows, the sweep's documented defaults (concentration 10, the spec's seed) and --seed against
mixbuild.sweep itself, its printed table recomputed from sweep.json, each member's index, a source with no domain, a
max_tokens cap one token short, MIXTURE.md's table and footer and a disk size summed over every shard: each test kills
a mutation of build.py or cli.py that the rest of the suite let through."""
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


def test_a_source_with_no_domain_anywhere_is_refused(tmp_path, spec_dict, spec_file, make_dataset, capsys):
    """Its validation rows would go under a domain named None (null in the manifest's JSON)."""
    make_dataset(tmp_path / "nodomain", "nodomain", "", [10])
    spec_dict["sources"][1]["manifest"] = str(tmp_path / "nodomain")
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'news': no domain in the spec or in" in err


def test_max_tokens_allows_only_float_rounding_over_it(tmp_path, spec_dict, spec_file, capsys):
    """news draws 0.3 x 4,000 = 1,200 tokens: a cap of 1,199 is 0.08% short, far past the 1e-9 tolerance."""
    spec_dict["sources"][1]["max_tokens"] = 1199
    err = one_line_error(capsys, ["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")])
    assert "source 'news' needs 1,200 tokens for a budget of 4,000 tokens, but max_tokens is 1,199" in err
    spec_dict["sources"][1]["max_tokens"] = 1200
    assert main(["build", str(spec_file(spec_dict)), "-o", str(tmp_path / "m.json")]) == 0


def test_the_markdown_table_and_footer_and_the_disk_size_of_every_shard(tmp_path, spec_file, datasets, capsys):
    assert main(["build", str(spec_file()), "-o", str(tmp_path / "m.json")]) == 0
    mixture = json.loads((tmp_path / "m.json").read_text())
    web = json.loads((datasets / "web" / "manifest.json").read_text())["splits"]["train"]["shards"]
    assert len(web) == 2 and mixture["sources"][0]["bytes_on_disk"] == sum(sh["bytes_on_disk"] for sh in web)
    md = (tmp_path / "m.md").read_text().splitlines()
    assert md[:2] == ["| Dataset | Sampling prop. | Epochs | Disk size |", "|:---|---:|---:|---:|"]
    assert md[2].startswith("| web | 50.0% | 0.83 | ")  # 2,000 of web's 300 x 8 = 2,400 tokens
    assert mixture["budget_sequences"] == 500  # every row is full: 4,000 // 8
    assert md[-1] == "Budget: 4,000 tokens (500 sequences of 8), weighting: explicit, seed 7."


def test_each_sweep_member_records_its_own_index_and_the_prior(tmp_path, spec_file):
    index = mixbuild.sweep(load_spec(spec_file()), 3, tmp_path / "s", concentration=10.0)
    for k, entry in enumerate(index["mixtures"]):
        member = json.loads((tmp_path / "s" / entry["path"]).read_text())
        assert entry["path"] == f"mixture-{k:03d}.json"
        assert member["weighting"] == {"method": "dirichlet", "prior": "spec",
                                       "prior_proportions": {"web": 0.5, "news": 0.3, "wiki": 0.2},
                                       "concentration": 10.0, "seed": 7, "index": k, "max_epochs": None}
        assert [s["proportion"] for s in member["sources"]] == list(entry["proportions"].values())
