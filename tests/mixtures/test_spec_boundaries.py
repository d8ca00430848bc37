"""The mixture spec's validation at its edges, against docs/mixtures.md and YAML's own reading of the values
(.inf, .nan, true, `on:` as a bool key): the documented defaults, every refusal as its exact one-line message
(zero caps, bools for counts, empty names and domains, options of another method), the spec's sha256 by
hashlib: each test kills a mutation of spec.py the rest of the suite let through."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from gristmill.errors import UserError
from gristmill.mixtures.spec import load_spec, parse_count, spec_from_dict

BASE = """\
sources:
  - {name: web, manifest: tokens/web}
  - {name: wiki, manifest: tokens/wiki, domain: reference, max_epochs: 4, max_tokens: 50K}
budget_tokens: 20M
weighting: {method: explicit, proportions: {web: 0.8, wiki: 0.2}}
"""
ROOT = Path("/specs")  # resolving a manifest path reads nothing, so the folder need not exist
DELETE = object()


def edited(**changes) -> dict:
    """BASE with each `a__b__0=YAML` set (as YAML reads the text) or removed (DELETE)."""
    raw = yaml.safe_load(BASE)
    for path, text in changes.items():
        *parents, last = path.split("__")
        node = raw
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        key = int(last) if last.isdigit() else last
        if text is DELETE:
            del node[key]
        else:
            node[key] = yaml.safe_load(text)
    return raw


def test_the_documented_defaults_and_what_is_kept(tmp_path):
    """Kills seed defaulting to anything but 0, normalize defaulting to true, a source's domain or the
    weighting's epoch cap dropped, and the spec's path or sha256 not being the file's own."""
    (tmp_path / "spec.yaml").write_text(BASE + "weighting: {method: unimax, max_epochs: 2.5}\n")
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.seed == 0 and spec.budget_tokens == 20_000_000 and spec.validation_max_sequences is None
    assert (spec.weighting.method, spec.weighting.max_epochs, spec.weighting.normalize) == ("unimax", 2.5, False)
    assert spec.weighting.proportions == {} and spec.weighting.temperature is None
    web, wiki = spec.sources
    assert (web.domain, web.max_epochs, web.max_tokens) == (None, None, None)  # None: the manifest's own domain
    assert (wiki.domain, wiki.max_epochs, wiki.max_tokens) == ("reference", 4.0, 50_000)
    assert web.manifest == (tmp_path / "tokens" / "web").resolve()
    assert spec.path == tmp_path / "spec.yaml"
    assert spec.sha256 == hashlib.sha256((tmp_path / "spec.yaml").read_bytes()).hexdigest()


def test_a_proportion_key_yaml_reads_as_a_number_names_the_quoted_source():
    """Kills the proportions' keys kept as YAML typed them: `2024: 1.0` is the key 2024, the source "2024"."""
    raw = yaml.safe_load('sources: [{name: "2024", manifest: m}]\nbudget_tokens: 100\n'
                         'weighting: {method: explicit, proportions: {2024: 1.0}}\n')
    assert spec_from_dict(raw, ROOT).weighting.proportions == {"2024": 1.0}


@pytest.mark.parametrize("changes, message", [
    # counts: YAML's true is an int in Python, .inf/.nan are floats, a list is no count
    ({"budget_tokens": "true"}, "budget_tokens must be a whole number, not True"),
    ({"budget_tokens": ".inf"}, "budget_tokens must be a whole number, not inf"),  # round(inf): OverflowError
    ({"budget_tokens": ".nan"}, "budget_tokens must be a whole number, not nan"),
    ({"budget_tokens": "[1000]"}, "budget_tokens must be a whole number, not [1000]"),
    ({"budget_tokens": "0"}, "budget_tokens must be > 0"),
    ({"budget_tokens": DELETE}, "spec: missing required key 'budget_tokens'"),
    ({"sources__1__max_tokens": "0"}, "sources[1].max_tokens must be > 0"),
    ({"sources__1__max_tokens": "false"}, "sources[1].max_tokens must be a whole number, not False"),
    # epoch caps and the temperature are numbers > 0: 0 would read no token, NaN passes every comparison
    ({"sources__1__max_epochs": "0"}, "sources[1].max_epochs must be > 0, not 0"),
    ({"sources__1__max_epochs": "-1"}, "sources[1].max_epochs must be > 0, not -1"),
    ({"sources__1__max_epochs": ".nan"}, "sources[1].max_epochs must be a number, not nan"),
    ({"sources__1__max_epochs": ".inf"}, "sources[1].max_epochs must be a number, not inf"),
    ({"sources__1__max_epochs": "true"}, "sources[1].max_epochs must be a number, not True"),
    ({"weighting__max_epochs": "0"}, "weighting.max_epochs must be > 0, not 0"),
    ({"weighting": "{method: temperature, temperature: 0}"}, "weighting.temperature must be > 0, not 0"),
    ({"weighting": "{method: temperature, temperature: hot}"}, "weighting.temperature must be a number, not 'hot'"),
    ({"weighting": "{method: temperature, temperature: true}"}, "weighting.temperature must be a number, not True"),
    # sources
    ({"sources": "[]"}, "spec: sources must be a non-empty list"),
    ({"sources": "{web: tokens/web}"}, "spec: sources must be a non-empty list"),
    ({"sources__0": "web"}, "sources[0] must be a mapping, not str"),  # not "unknown key 'b'" (a letter of it)
    ({"sources__0": "null"}, "sources[0] must be a mapping, not null"),
    ({"sources__0__name": '""'}, "sources[0]: name must be a non-empty string (quote it in YAML), not ''"),
    ({"sources__0__name": "2024"}, "sources[0]: name must be a non-empty string (quote it in YAML), not 2024"),
    ({"sources__0__name": DELETE}, "sources[0]: needs a name"),
    ({"sources__0__manifest": '""'}, "sources[0] (web): needs a manifest path"),
    ({"sources__0__domain": '""'}, "sources[0] (web): domain must be a non-empty string"),
    ({"sources__0__domain": "5"}, "sources[0] (web): domain must be a non-empty string"),
    ({"sources__1__name": "web"}, "spec: source name 'web' is used twice"),
    ({"sources__0__colour": "red", "sources__0__bucket": "x"},
     "sources[0]: unknown key 'bucket' (allowed: domain, manifest, max_epochs, max_tokens, name)"),
    # seed: an integer >= 0, and YAML's true is no seed
    ({"seed": "true"}, "seed must be an integer >= 0, not True"),
    ({"seed": "1.0"}, "seed must be an integer >= 0, not 1.0"),
    # the weighting: each option belongs to one method
    ({"weighting": DELETE}, "spec: missing required key 'weighting'"),
    ({"weighting": "null"}, "weighting must be a mapping, not null"),
    ({"weighting__method": "dirichlet"},  # a sweep's manifests record this method; a spec cannot use it
     "weighting.method must be one of explicit, temperature, unimax, not 'dirichlet'"),
    ({"weighting__proportions": "[0.8, 0.2]"}, "weighting.proportions must be a mapping of source name to proportion"),
    ({"weighting__proportions": DELETE}, "weighting.method explicit needs weighting.proportions"),
    ({"weighting": "{method: temperature, temperature: 2, proportions: {web: 1}}"},
     "weighting.proportions is only used by method explicit, not temperature"),
    ({"weighting": "{method: unimax, temperature: 2}"},
     "weighting.temperature is only used by method temperature, not unimax"),
    ({"weighting__normalize": '"yes"'}, "weighting.normalize must be true or false, not 'yes'"),
    ({"weighting__normalize": "1"}, "weighting.normalize must be true or false, not 1"),
    # validation
    ({"validation": "{max_seqs: 5}"}, "validation: unknown key 'max_seqs' (allowed: max_sequences)"),
    ({"validation": "{max_sequences: 1.5}"}, "validation.max_sequences must be a whole number, not 1.5"),
])
def test_a_spec_mistake_is_its_one_line_message(changes, message):
    """Kills each check of spec_from_dict removed or loosened (`<= 0` to `< 0`, `is not None` to truthiness,
    which read a cap of 0 as no cap) and the messages' wording."""
    with pytest.raises(UserError) as e:
        spec_from_dict(edited(**changes), ROOT)
    assert str(e.value) == message


def test_the_base_spec_and_its_edges_are_accepted():
    """The cases above fail for their one change, not for the base; the smallest values accepted are."""
    assert spec_from_dict(edited(), ROOT).budget_tokens == 20_000_000
    spec = spec_from_dict(edited(budget_tokens="1", seed="0", sources__1__max_tokens="1",
                                 sources__1__max_epochs="0.001", weighting__normalize="true",
                                 validation="{max_sequences: null}"), ROOT)
    assert (spec.budget_tokens, spec.seed, spec.sources[1].max_tokens, spec.sources[1].max_epochs) == (1, 0, 1, 0.001)
    assert spec.weighting.normalize is True and spec.validation_max_sequences is None


def test_unknown_keys_of_mixed_types_are_one_line_not_a_type_error():
    """YAML 1.1 reads `on:` as the key True: sorting it with the key 'colour' was a TypeError traceback."""
    raw = yaml.safe_load(BASE + "on: 1\ncolour: red\n")
    assert True in raw  # PyYAML's reading, which the bug depended on
    with pytest.raises(UserError) as e:
        spec_from_dict(raw, ROOT)
    assert str(e.value) == "spec: unknown key True (allowed: budget_tokens, seed, sources, validation, weighting)"



@pytest.mark.parametrize("text, message", [
    # the exact value written, not its float: "not 2.0" and "not 0.0" contradicted "must be a whole number"
    ("2.0000000000000000001", "n must be a whole number, not 2.0000000000000000001"),
    ("1e-400", "n must be a whole number, not 1E-400"),
    ("1.0000005K", "n must be a whole number, not 1000.0005"),
    ("1.5", "n must be a whole number, not 1.5"),
])
def test_a_count_that_is_not_whole_is_named_exactly(text, message):
    with pytest.raises(UserError) as e:
        parse_count(text, "n")
    assert str(e.value) == message
    assert parse_count("1.000005M", "n") == 1_000_005  # exact, as docs/mixtures.md says counts are read


def test_an_empty_or_invalid_spec_file_is_one_line(tmp_path):
    """Kills the YAML error's traceback; an empty file read "spec must be a mapping, not NoneType"."""
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(UserError, match=r"^.*empty\.yaml is empty: a mixture spec needs sources, budget_tokens and "
                                        r"weighting$"):
        load_spec(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("sources: [\n")
    with pytest.raises(UserError, match=r"^.*bad\.yaml is not valid YAML: [^\n]+$"):
        load_spec(tmp_path / "bad.yaml")


def test_mix_build_prints_a_spec_mistake_as_one_line(tmp_path, capsys):
    """Through the CLI, as a user meets it: exit status 2 and one line on stderr (docs/mixtures.md)."""
    from gristmill.mixtures.cli import main

    (tmp_path / "spec.yaml").write_text(BASE + "on: 1\n")
    assert main(["build", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: spec: unknown key True (allowed: ") and err.count("\n") == 1
