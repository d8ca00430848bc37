"""MixtureLoader: realised proportions, exact resume, disjoint ranks, epochs without repeats, validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.loader import DRAW_VERSION, DrawChanged, MixtureLoader, MixtureSampler, source_draws
from gristmill.mixtures.spec import spec_from_dict
from manifest_edit import DROP, edit

SEEDS = {"web": 0, "news": 1, "wiki": 2}  # the tag each fixture source writes into its rows


@pytest.fixture
def mixture(tmp_path, spec_dict):
    spec_dict["validation"] = {"max_sequences": 40}
    path = tmp_path / "mix" / "mixture.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec_dict, tmp_path), path), path)
    return path


def tags(batch) -> list[tuple[int, int]]:
    """(source seed, row) of each sequence, read back from the ids the fixture wrote."""
    b = np.asarray(batch)
    return [(int(r[0]) - 1, int(r[1]) - 1) for r in b]


def run(loader, steps):
    return [next_batch for _, next_batch in zip(range(steps), loader)]


def test_realised_proportions_match_manifest(mixture):
    """100k draws through the loader: counts agree with the manifest's proportions (chi-square) and
    every row comes from the source the sampler chose."""
    loader = MixtureLoader(mixture, 1000, steps=100, with_sources=True, as_numpy=True)
    p = np.array([s["proportion"] for s in loader.manifest["sources"]])
    counts = np.zeros(3, dtype=np.int64)
    for ids, src in loader:
        counts += np.bincount(src, minlength=3)
        assert [t[0] for t in tags(ids)] == [SEEDS[loader.names[s]] for s in src]
    n = counts.sum()
    assert n == 100_000
    assert np.all(np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n))
    assert stats.chisquare(counts, n * p).pvalue > 1e-3


def full_and_short_mixture(tmp_path, make_dataset) -> tuple[Path, dict]:
    """50/50 of a source whose rows hold 8 tokens and one whose rows hold 3 (then PAD)."""
    make_dataset(tmp_path / "full", "full", "web", [200], seed=0)
    make_dataset(tmp_path / "short", "short", "web", [200], seed=1, pad_from=3)
    spec = {"sources": [{"name": "full", "manifest": str(tmp_path / "full")},
                        {"name": "short", "manifest": str(tmp_path / "short")}],
            "budget_tokens": 4000, "seed": 7, "weighting": {"method": "explicit", "proportions": {"full": 0.5, "short": 0.5}}}
    path = tmp_path / "mixture.json"
    manifest = mixbuild.build(spec_from_dict(spec, tmp_path), path)
    mixbuild.write_mixture(manifest, path)
    return path, manifest


def test_token_shares_match_the_proportions_when_rows_end_in_pad(tmp_path, make_dataset):
    """Proportions, tokens and epochs count non-PAD tokens. A source whose rows hold 3 tokens (then PAD) beside
    one whose rows hold 8, at 50/50: its rows are drawn 8/3 times as often, so each source gives half the drawn
    tokens, and budget_sequences is the rows that hold the budget (2000/8 + 2000/3), not budget / seq_len."""
    path, manifest = full_and_short_mixture(tmp_path, make_dataset)
    assert manifest["budget_sequences"] == 250 + 666
    assert [s["epochs"] for s in manifest["sources"]] == [2000 / 1600, 2000 / 600]
    assert len(MixtureLoader(path, 4)) == 916 // 4
    loader = MixtureLoader(path, 1000, steps=40, with_sources=True, as_numpy=True)
    tokens, rows = np.zeros(2), np.zeros(2)
    for ids, src in loader:
        np.add.at(tokens, src, np.count_nonzero(ids, axis=1))
        np.add.at(rows, src, 1)
    assert tokens[1] / tokens.sum() == pytest.approx(0.5, abs=0.01)  # drawing rows by proportion gives 0.27
    # and so each source's realised epochs (draws over rows per epoch, scaled to the budget) are the manifest's
    scale = manifest["budget_sequences"] / rows.sum()
    assert rows * scale / 200 == pytest.approx([s["epochs"] for s in manifest["sources"]], rel=0.03)


def test_draws_are_a_pure_function_of_the_global_index():
    p = np.array([0.1, 0.0, 0.6, 0.3])
    whole = source_draws(p, 3, 0, 1000)
    assert np.array_equal(whole[400:], source_draws(p, 3, 400, 600))
    assert not np.any(whole == 1)  # a zero proportion is never drawn
    assert not np.array_equal(whole, source_draws(p, 4, 0, 1000))


def test_each_epoch_is_a_permutation():
    """The k-th draw from a source reads perm_e[k mod n]: every n consecutive draws of a source cover
    its rows exactly once, and the order changes between epochs."""
    sampler = MixtureSampler(["a", "b"], [0.7, 0.3], [50, 13], seed=5)
    src, rows = sampler.draw(2000)
    for s, n in ((0, 50), (1, 13)):
        seq = rows[src == s]
        epochs = [seq[k : k + n] for k in range(0, len(seq) - n + 1, n)]
        assert len(epochs) >= 3
        for e in epochs:
            assert sorted(e.tolist()) == list(range(n))
        assert not np.array_equal(epochs[0], epochs[1])
    # a source's order depends on its name and the seed, not its position in the mixture
    other = MixtureSampler(["b", "a"], [0.3, 0.7], [13, 50], seed=5)
    assert np.array_equal(other.permutation(1, 0), sampler.permutation(0, 0))


def test_resume_reproduces_uninterrupted_run(mixture):
    steps, k = 200, 77  # 800 draws: wiki (40 rows, p=0.2) runs through about 4 epochs
    full = run(MixtureLoader(mixture, 4, steps=steps), steps)
    first = MixtureLoader(mixture, 4, steps=steps)
    head = run(first, k)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would store it
    assert state["sample"] == 4 * k
    resumed = MixtureLoader(mixture, 4, steps=steps)
    resumed.load_state_dict(state)
    assert resumed.step == k and len(resumed) == steps - k
    tail = list(resumed)
    assert len(head) + len(tail) == steps
    for a, b in zip(full, head + tail):
        assert a.dtype == torch.int64 and torch.equal(a, b)
    assert set(first.state_dict()["counts"]) == {"web", "news", "wiki"}


def old_draw_loader(path, batch_size) -> MixtureLoader:
    """A loader drawing as gristmill did before DRAW_VERSION 2 (rows by the proportions themselves), saving its
    position as it did then: without the `draw` field."""
    loader = MixtureLoader(path, batch_size)
    loader.sampler = MixtureSampler(loader.names, [s["proportion"] for s in loader.manifest["sources"]],
                                    loader.sampler.sequences, loader.seed)
    plain = loader.state_dict
    loader.state_dict = lambda: {k: v for k, v in plain().items() if k != "draw"}
    return loader


def test_position_records_its_draw(mixture):
    loader = MixtureLoader(mixture, 4)
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["draw"] == {"version": DRAW_VERSION,
                             "weights": dict(zip(loader.names, mixbuild.row_weights(loader.manifest["sources"], 8)))}
    assert loader.draw_change(state) is None
    assert "version 3" in loader.draw_change(state | {"draw": {**state["draw"], "version": 3}})


def test_an_old_position_under_another_draw_is_refused_unless_allowed(tmp_path, make_dataset):
    """An old loader drew the PAD-tailed mixture by the proportions: its position followed by this loader's draw
    gives other rows than the old run would have read next, so a plain resume is refused; allowed, it continues
    from that position by this loader's draw, as a loader of this version at that position does."""
    path, _ = full_and_short_mixture(tmp_path, make_dataset)
    old = old_draw_loader(path, 4)
    run(old, 10)
    state = json.loads(json.dumps(old.state_dict()))
    assert "draw" not in state
    old_next = run(old, 5)
    with pytest.raises(DrawChanged, match=r"drew rows by the proportions \(full 0.5, short 0.5\); this one draws "
                                          r"them by token share \(full 0.5, short 1.333\)"):
        MixtureLoader(path, 4).load_state_dict(state)
    resumed = MixtureLoader(path, 4)
    change = resumed.load_state_dict(state, allow_draw_change=True)
    assert change.startswith("the loader position was saved by an older gristmill")
    assert resumed.step == 10 and resumed.sampler.counts.tolist() == [state["counts"][n] for n in resumed.names]
    new_next = run(resumed, 5)
    assert any(not torch.equal(a, b) for a, b in zip(old_next, new_next))  # why it is refused
    reference = MixtureSampler(resumed.names, resumed.sampler.weights, resumed.sampler.sequences, resumed.seed)
    reference.sample = 40
    reference.counts = np.array([state["counts"][n] for n in resumed.names])
    want = [reference.draw(4) for _ in range(5)]
    assert [tags(b) for b in new_next] == [list(zip(s.tolist(), r.tolist())) for s, r in want]


def test_an_old_position_under_the_same_draw_resumes_exactly(mixture):
    """Rows that are all full have row weights equal to the proportions, bit for bit: an old position resumes
    silently and the rows that follow are those the old loader would have read."""
    old = old_draw_loader(mixture, 4)
    run(old, 30)
    state = json.loads(json.dumps(old.state_dict()))
    old_next = run(old, 20)
    resumed = MixtureLoader(mixture, 4)
    assert resumed.load_state_dict(state) is None
    assert all(torch.equal(a, b) for a, b in zip(old_next, run(resumed, 20)))


def test_ranks_partition_the_global_batch(mixture):
    one = run(MixtureLoader(mixture, 6, steps=50), 50)
    ranks = [run(MixtureLoader(mixture, 2, rank=r, world_size=3, steps=50), 50) for r in range(3)]
    for t in range(50):
        assert torch.equal(one[t], torch.cat([ranks[r][t] for r in range(3)]))
    # within the first epoch of every source no two ranks read the same row
    seen = [set(tags(torch.cat(ranks[r][:10]))) for r in range(3)]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_resume_on_a_different_world_size(mixture):
    one = MixtureLoader(mixture, 4, steps=20)
    head = run(one, 8)
    state = one.state_dict()
    rest = []
    for r in range(2):
        loader = MixtureLoader(mixture, 2, rank=r, world_size=2, steps=20)
        loader.load_state_dict(state)
        rest.append(list(loader))
    reference = run(MixtureLoader(mixture, 4, steps=20), 20)
    for t in range(12):
        assert torch.equal(reference[8 + t], torch.cat([rest[0][t], rest[1][t]]))
    assert all(torch.equal(a, b) for a, b in zip(reference[:8], head))


def test_default_length_is_the_budget(mixture):
    loader = MixtureLoader(mixture, 8)
    assert loader.steps == 500 // 8 and len(list(loader)) == 62


def test_seed_controls_order(mixture):
    a = run(MixtureLoader(mixture, 4), 5)
    b = run(MixtureLoader(mixture, 4), 5)
    c = run(MixtureLoader(mixture, 4, seed=8), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_state_from_another_mixture_is_refused(mixture, tmp_path, spec_dict):
    spec_dict["weighting"]["proportions"] = {"web": 0.2, "news": 0.3, "wiki": 0.5}
    other = tmp_path / "other.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec_dict, tmp_path), other), other)
    state = MixtureLoader(other, 4).state_dict()
    with pytest.raises(UserError, match="different mixture"):
        MixtureLoader(mixture, 4).load_state_dict(state)
    with pytest.raises(UserError, match=r"^loader state is at sample 4, not a multiple of the global batch 6 = "
                       r"batch_size 3 x world_size 2 \(for `trainer train`: micro_batch_size 3 x 2 rank\(s\)\)"):
        MixtureLoader(other, 3, rank=1, world_size=2).load_state_dict(state | {"sample": 4})


def test_changed_dataset_is_refused(mixture, tmp_path):
    m = json.loads(mixture.read_text())
    m["sources"][0]["manifest_sha256"] = "0" * 64
    bad = mixture.with_name("bad.json")
    bad.write_text(json.dumps(m))
    with pytest.raises(UserError, match="changed since the mixture was built"):
        MixtureLoader(bad, 4)


def test_validation_per_domain(mixture):
    loader = MixtureLoader(mixture, 4, as_numpy=True)
    assert loader.domains == ["web", "reference"]
    # web has 30 + 20 validation rows, capped at 40: 24 evenly spaced from web, 16 from news
    rows = [t for b in loader.validation("web", batch_size=7) for t in tags(b)]
    assert rows == [(0, j * 30 // 24) for j in range(24)] + [(1, j * 20 // 16) for j in range(16)]
    assert [t for b in loader.validation("reference") for t in tags(b)] == [(2, j) for j in range(10)]
    # ranks get equal, disjoint blocks
    parts = [
        [t for b in MixtureLoader(mixture, 4, rank=r, world_size=3).validation("web") for t in tags(b)]
        for r in range(3)
    ]
    assert [len(p) for p in parts] == [13, 13, 13] and parts[0] + parts[1] + parts[2] == rows[:39]
    with pytest.raises(UserError, match="no validation set for domain 'code'"):
        next(loader.validation("code"))


def test_a_folder_or_a_mix_spec_instead_of_a_manifest_is_named(tmp_path, spec_dict, datasets):
    import yaml

    with pytest.raises(UserError, match=r"is a folder \(a token dataset\?\); give a mixture manifest written by `mix build`"):
        MixtureLoader(next(p for p in datasets.iterdir() if p.is_dir()), 4)
    for name, text in (("mix.yaml", yaml.safe_dump(spec_dict)), ("mix.json", json.dumps(spec_dict)),
                       ("mix.txt", yaml.safe_dump(spec_dict))):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=r"looks like a mix spec; run `mix build .*mix\.\w+ -o MIX\.json` first"):
            MixtureLoader(tmp_path / name, 4)
    with pytest.raises(UserError, match="does not exist"):
        MixtureLoader(tmp_path / "absent.json", 4)
    with pytest.raises(UserError, match="^mixture manifest /dev/null is not a file$"):
        MixtureLoader("/dev/null", 4)
    (tmp_path / "mix.md").write_text("# a mixture's report\n\n| source | share |\n")  # mix build's .md beside it
    with pytest.raises(UserError, match=r"mix\.md is not a mixture manifest \(not valid JSON: .*\); give the \.json"):
        MixtureLoader(tmp_path / "mix.md", 4)


@pytest.mark.parametrize("path, value, message", [
    (("sources", 0, "proportion"), 5.0, "the proportions sum to 5.5, not 1"),
    (("sources", 0, "proportion"), -0.5, "proportion -0.5, not a number >= 0"),
    (("sources", 0, "proportion"), float("nan"), "proportion nan"),
    (("sources", 1, "name"), "web", "source 'web' is listed twice"),
    (("sources",), [], "it lists no sources"),
    (("sources", 0, "name"), DROP, "source 0 has no name or manifest"),
    (("budget_sequences",), DROP, "budget_sequences is None"),
    (("budget_sequences",), "100", "budget_sequences is '100'"),
    (("seed",), -1, "seed is -1"),
    (("sources", 0, "tokens_available"), 0, "tokens_available 0, not a positive integer"),
    (("sources", 0, "sequences_available"), 10, "sequences_available 10, its train split 300"),
    (("validation",), DROP, "no validation object"),
    (("tokenizer",), DROP, "no tokenizer.vocab_size"),
])
def test_an_edited_mixture_is_one_line(mixture, path, value, message):
    m = json.loads(mixture.read_text())
    edit(m, path, value)
    bad = mixture.with_name("bad.json")
    bad.write_text(json.dumps(m))
    with pytest.raises(UserError, match="write (it|the mixture) again with `mix build`") as e:
        MixtureLoader(bad, 4)
    assert message in str(e.value)


@pytest.mark.parametrize("key, value, message", [("sequences", 10**6, "takes 1000000 sequences of its 30"),
                                                 ("sequences", -4, "has sequences -4, not a count")])
def test_an_edited_validation_set_is_one_line(mixture, key, value, message):
    m = json.loads(mixture.read_text())
    m["validation"]["web"]["sources"][0][key] = value
    bad = mixture.with_name("bad.json")
    bad.write_text(json.dumps(m))
    with pytest.raises(UserError, match="again with `mix build`") as e:
        list(MixtureLoader(bad, 4).validation("web"))
    assert message in str(e.value)


@pytest.mark.parametrize("flip, shown", [(0x40, "10737"), (0x80, "-21474")])  # id + 2**30; the sign bit: negative
def test_a_shard_damaged_in_its_input_ids_is_one_line(tmp_path, make_dataset, flip, shown):
    """Open-time checks read a shard's metadata and small columns, not its input_ids: an id pushed outside the
    vocabulary there would index past the model's embedding (an IndexError, or a CUDA assert). It is caught as
    the batch is gathered."""
    import pyarrow as pa

    from gristmill.tokenize.shards import TokenDataset
    from gristmill.trainer.data import token_dataset_batches

    make_dataset(tmp_path / "d", "d", "web", [50], 10)
    spec = {"sources": [{"name": "d", "manifest": str(tmp_path / "d")}], "budget_tokens": 400, "seed": 0,
            "weighting": {"method": "explicit", "proportions": {"d": 1.0}}}
    path = tmp_path / "mix.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, tmp_path), path), path)
    shard = tmp_path / "d" / "train-00000.arrow"
    data = bytearray(shard.read_bytes())
    whole = pa.py_buffer(bytes(data))
    ids = pa.ipc.open_file(whole).get_batch(0).column(0).values.buffers()[1]
    data[ids.address - whole.address + 4 * 5 + 3] ^= flip  # sequence 0, position 5: its id's top byte
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"train-00000.arrow is damaged: sequence 0 of split 'train' holds token id "
                                        + shown):
        list(MixtureLoader(path, 5))
    with pytest.raises(UserError, match=r"train-00000.arrow is damaged: sequence 0"):
        list(token_dataset_batches(TokenDataset(tmp_path / "d"), 4))


def test_a_mixture_vocab_size_below_the_data_ids_is_one_line(mixture):
    m = json.loads(mixture.read_text())
    m["tokenizer"]["vocab_size"] = 10
    bad = mixture.with_name("bad.json")
    bad.write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"tokenizer.vocab_size is 10, but sequence \d+ of .*\.arrow holds token id"):
        next(iter(MixtureLoader(bad, 4)))


def _splitmix64_draws(proportions, seed, count):
    """The documented draw in plain Python integers: u_g = SplitMix64(key + g x golden) >> 11 over 2**53 for
    g = 1..count, key the seed's first SeedSequence word; the source is the first whose cumulative share
    exceeds u_g."""
    m64 = (1 << 64) - 1
    key = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
    total = sum(proportions)
    cum = [sum(proportions[: i + 1]) / total for i in range(len(proportions))]
    out = []
    for g in range(1, count + 1):
        z = (key + g * 0x9E3779B97F4A7C15) & m64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        u = ((z ^ (z >> 31)) >> 11) / 2.0**53
        out.append(next(i for i, c in enumerate(cum) if u < c))
    return out


def test_source_draws_are_the_documented_splitmix64_stream():
    """Pinned to its definition, so the stream cannot change without DRAW_VERSION: checkpoints count in it."""
    p = [0.1, 0.0, 0.6, 0.3]
    assert source_draws(np.array(p), 3, 0, 20).tolist() == [0, 2, 3, 2, 2, 0, 0, 2, 2, 2, 2, 2, 2, 3, 2, 3, 0, 3, 3, 2]
    assert source_draws(np.array(p), 3, 0, 500).tolist() == _splitmix64_draws(p, 3, 500)
    assert source_draws(np.array([2.0, 1.0]), 11, 0, 300).tolist() == _splitmix64_draws([2.0, 1.0], 11, 300)


def test_a_sources_row_order_is_keyed_by_the_seed_its_name_and_the_epoch():
    """perm = Philox(SeedSequence([seed, first 8 bytes of sha256(name) little-endian, epoch])).permutation(n)."""
    import hashlib

    name_key = int.from_bytes(hashlib.sha256(b"a").digest()[:8], "little")
    for seed, epoch in ((1, 0), (2, 0), (1, 3)):
        expected = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, name_key, epoch]))).permutation(100)
        assert np.array_equal(MixtureSampler(["a"], [1.0], [100], seed=seed).permutation(0, epoch), expected)
    one_source = [MixtureSampler(["a"], [1.0], [100], seed=s).draw(100)[1] for s in (1, 2)]
    assert not np.array_equal(*one_source)  # with one source only the rows' order can depend on the seed


def test_a_position_saved_with_another_seed_or_other_sources_is_refused(mixture):
    state = MixtureLoader(mixture, 4).state_dict()
    with pytest.raises(UserError, match=rf"^loader state was saved with seed {state['seed']}, this loader has seed "
                                        rf"{state['seed'] + 1}$"):
        MixtureLoader(mixture, 4, seed=state["seed"] + 1).load_state_dict(state)
    renamed = json.loads(json.dumps(state))
    renamed["counts"]["web2"] = renamed["counts"].pop("web")
    with pytest.raises(UserError, match="^loader state names different sources than the mixture$"):
        MixtureLoader(mixture, 4).load_state_dict(renamed)


def test_a_stale_tokens_available_is_one_line(mixture):
    """The row weights are computed from tokens_available: one the dataset no longer has is refused."""
    m = json.loads(mixture.read_text())
    n = m["sources"][0]["tokens_available"]
    m["sources"][0]["tokens_available"] = n + 1
    bad = mixture.with_name("bad.json")
    bad.write_text(json.dumps(m))
    with pytest.raises(UserError, match=rf"source 'web' has tokens_available {n + 1}, its train split {n}; write the "
                                        rf"mixture again"):
        MixtureLoader(bad, 4)
