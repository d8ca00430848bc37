"""mix build and its spec at their boundaries: largest-remainder allocations by hand (Hamilton), the caps'
tolerances, the whole budget drawn, counts and caps refused: each test kills a mutation the rest of the suite
let through."""
from __future__ import annotations

import math

import pytest

from gristmill.errors import UserError


def test_largest_remainder_gives_the_leftover_to_the_largest_remainders():
    """Kills the reversed remainder order and round() in place of floor(): hand-computed Hamilton allocations."""
    from gristmill.mixtures.build import largest_remainder
    assert largest_remainder([0.5, 0.3, 0.2], 7) == [4, 2, 1]  # 3.5 2.1 1.4: the one left goes to .5
    assert largest_remainder([1, 1, 1], 2) == [1, 1, 0]  # ties by index
    assert largest_remainder([0.6, 0.4], 3) == [2, 1]  # 1.8 1.2
    for w, total in [([1, 1, 1], 2), ([0.6, 0.4], 3), ([2, 3, 5], 17), ([0.15, 0.35, 0.5], 101)]:
        assert sum(largest_remainder(w, total)) == total


def _source(tokens, max_epochs=None, max_tokens=None):
    from gristmill.mixtures.build import Source
    from gristmill.mixtures.spec import SourceSpec
    return Source(spec=SourceSpec("s", "/nowhere", "web", max_epochs, max_tokens), manifest={}, manifest_path="/m",
                  manifest_sha256="", domain="web", tokens=tokens, sequences=tokens // 8, bytes_on_disk=0)


def test_token_cap_is_the_smaller_of_the_epoch_and_token_caps():
    """Kills token_cap replacing the epoch cap by max_tokens."""
    assert _source(100, max_epochs=2, max_tokens=1000).token_cap(None) == 200
    assert _source(100, max_epochs=2, max_tokens=150).token_cap(None) == 150
    assert _source(100, max_tokens=150).token_cap(3.0) == 150
    assert _source(100).token_cap(None) == math.inf


def test_a_draw_just_over_the_epoch_cap_is_refused():
    """Kills a loose cap tolerance (1e-3): needing 0.05% more than max_epochs breaks the cap."""
    from gristmill.mixtures.build import cap_violation
    from gristmill.mixtures.spec import MixtureSpec, Weighting
    src = _source(1_000_000, max_epochs=1.0)
    spec = MixtureSpec((src.spec,), 1_000_500, 0, Weighting("explicit", {"s": 1.0}))
    assert "max_epochs" in cap_violation(spec, [src], [1.0])
    spec = MixtureSpec((src.spec,), 1_000_000, 0, Weighting("explicit", {"s": 1.0}))
    assert cap_violation(spec, [src], [1.0]) is None


def test_human_bytes_rounds_up_into_the_next_unit():
    """Kills `n < 1000` in place of 999.5: 999.7 KB prints as 1.0 MB, not 1000 KB."""
    from gristmill.mixtures.build import human_bytes
    assert human_bytes(999_700) == "1.0 MB"
    assert human_bytes(999_400) == "999 KB"
    assert human_bytes(999) == "999 B"


def test_parse_count_refuses_a_fractional_float():
    """Kills parse_count accepting 2.5 (rounded to 2) for a count."""
    from gristmill.mixtures.spec import parse_count
    assert parse_count(2.0, "x") == 2
    with pytest.raises(UserError, match="whole number"):
        parse_count(2.5, "x")


def test_a_validation_cap_of_zero_is_refused(tmp_path):
    """Kills `val_cap < 0`: validation.max_sequences 0 would keep no validation rows."""
    from gristmill.mixtures.spec import spec_from_dict
    raw = {"sources": [{"name": "a", "manifest": "tokens/a"}], "budget_tokens": 1000,
           "weighting": {"method": "explicit", "proportions": {"a": 1.0}}, "validation": {"max_sequences": 0}}
    with pytest.raises(UserError, match="max_sequences must be > 0"):
        spec_from_dict(raw, tmp_path)
    raw["validation"] = {"max_sequences": 1}
    assert spec_from_dict(raw, tmp_path).validation_max_sequences == 1


def test_assemble_draws_the_whole_budget_and_records_the_default_epoch_cap(tmp_path):
    """Kills truncating draws (int(p * budget): 333 + 666 = 999 of 1000) and a manifest max_epochs that leaves
    out the weighting's default cap."""
    from gristmill.mixtures.build import Source, assemble
    from gristmill.mixtures.spec import MixtureSpec, SourceSpec, Weighting
    manifest = {"seq_len": 8, "splits": {"train": {"shards": []}},
                "tokenizer": {"path": "t.json", "sha256": "x", "vocab_size": 3, "bos_id": 0, "eos_id": 1, "pad_id": 2}}
    specs = (SourceSpec("a", "/a", "web"), SourceSpec("b", "/b", "web", max_epochs=5.0))
    sources = [Source(spec=s, manifest=manifest, manifest_path=f"/{s.name}/manifest.json", manifest_sha256="",
                      domain="web", tokens=1000, sequences=125, bytes_on_disk=0) for s in specs]
    spec = MixtureSpec(specs, 1000, 0, Weighting("explicit", {"a": 1, "b": 2}, max_epochs=3.0))
    m = assemble(spec, sources, [1 / 3, 2 / 3], {"method": "explicit"}, tmp_path / "mix.json")
    assert [e["tokens_to_draw"] for e in m["sources"]] == [333, 667]
    assert [e["max_epochs"] for e in m["sources"]] == [3.0, 5.0]
    assert m["budget_sequences"] == 125  # 333 * 125/1000 + 667 * 125/1000 = 125 exactly
