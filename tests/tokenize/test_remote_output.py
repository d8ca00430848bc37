"""A recipe whose output is not a local folder (gs://, s3://) writes the same token dataset, byte for byte; and
a token dataset there is read (mix build, the loader, the trainer's reader) as its local copy is.

`gmtest://` stands in for an object store: a Beam FileSystem that keeps its objects under a local root, reached
only through Beam's FileSystems API, with no folders to make (as on GCS). A step that used the local file API on
the output path would write a stray `gmtest:` folder in the working directory, or miss its files.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from gristmill.errors import UserError
from gristmill.pipeline.docio import CreateDocuments
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext
from gristmill.tokenize.stages import Tokenize, TrainTokenizer
from object_store import PREFIX, MappedFileSystem

BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def files_under(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, root)] = open(full, "rb").read()
    return out


@pytest.fixture
def remote_root(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    root.mkdir()
    monkeypatch.setattr(MappedFileSystem, "ROOT", str(root))
    monkeypatch.chdir(tmp_path / "bucket")  # a stray local write to "gmtest://..." would land here
    return root


def _stages(docs, **tokenize):
    return [CreateDocuments("Create", docs), TrainTokenizer("TrainTokenizer", vocab_size=900, sample_docs=300),
            Tokenize("Tokenize", seq_len=64, shard_bytes=64 * 4 * 200, validation_fraction=0.1, **tokenize)]


def test_remote_output_gets_the_local_bytes(docs, tmp_path, remote_root):
    local = tmp_path / "local"
    run_stages(_stages(docs), RunContext(output=str(local), seed=5, recipe_name="cc_test", recipe_hash="f00d"),
               BEAM_ARGS)
    # Rerun into a folder that holds a shard from an earlier, bigger run: finalize must delete it.
    (remote_root / "run" / "tokens").mkdir(parents=True)
    (remote_root / "run" / "tokens" / "train-00099.arrow").write_bytes(b"stale")
    stats = run_stages(_stages(docs), RunContext(output=PREFIX + "run", seed=5, recipe_name="cc_test",
                                                 recipe_hash="f00d"), BEAM_ARGS)
    assert stats["balanced"]
    ours, theirs = files_under(remote_root / "run" / "tokens"), files_under(local / "tokens")
    assert sorted(ours) == sorted(theirs) and len(ours) >= 5  # shards of both splits, tokenizer, manifest
    assert ours == theirs
    assert not any(name.startswith("gmtest") for name in os.listdir(remote_root))  # no local writes
    assert (remote_root / "run" / "stats.json").is_file()


def test_tokenize_reads_a_remote_tokenizer_and_reports_a_missing_one(docs, tmp_path, remote_root):
    first = run_stages(_stages(docs), RunContext(output=PREFIX + "a", seed=5, recipe_name="t", recipe_hash="0"),
                       BEAM_ARGS)
    assert first["balanced"]
    tok = PREFIX + "a/tokens/tokenizer.json"
    run_stages([CreateDocuments("Create", docs), Tokenize("Tokenize", seq_len=64, shard_bytes=64 * 4 * 200,
                                                          validation_fraction=0.1, tokenizer=tok)],
               RunContext(output=PREFIX + "b", seed=5, recipe_name="t", recipe_hash="0"), BEAM_ARGS)
    assert files_under(remote_root / "b" / "tokens") == files_under(remote_root / "a" / "tokens")
    with pytest.raises(UserError, match="tokenizer file gmtest://nowhere/tokenizer.json does not exist"):
        run_stages([CreateDocuments("Create", docs), Tokenize("Tokenize", tokenizer=PREFIX + "nowhere/tokenizer.json")],
                   RunContext(output=PREFIX + "c", seed=5, recipe_name="t", recipe_hash="0"), BEAM_ARGS)


# ---------------------------------------------------------------------------------------------------------
# Reading a remote token dataset


@pytest.fixture
def remote_dataset(docs, tmp_path, remote_root, monkeypatch):
    """(local token folder, its copy at gmtest://ds/tokens); the cache is the test's own."""
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "local"
    run_stages(_stages(docs), RunContext(output=str(local), seed=5, recipe_name="cc_test", recipe_hash="f00d"),
               BEAM_ARGS)
    shutil.copytree(local / "tokens", remote_root / "ds" / "tokens")
    return local / "tokens", PREFIX + "ds/tokens"


def _rows(ds) -> list[bytes]:
    return [ds[i].tobytes() + ds.doc_starts(i).tobytes() + bytes([ds.n_bytes(i) % 256]) for i in range(len(ds))]


def test_remote_dataset_reads_as_its_local_copy(remote_dataset, tmp_path, capsys):
    from gristmill.tokenize.shards import TokenDataset

    local, url = remote_dataset
    for split in ("train", "validation"):
        assert _rows(TokenDataset(url, split)) == _rows(TokenDataset(local, split))
    assert "staging" in capsys.readouterr().err
    staged = [p for p in (tmp_path / "cache" / "datasets").iterdir()]
    assert len(staged) == 1
    assert files_under(staged[0]).keys() - {".lock"} == files_under(local).keys()
    assert files_under(staged[0]) | {".lock": b""} == files_under(local) | {".lock": b""}
    # A second reader reuses the copy: nothing is staged again.
    TokenDataset(url + "/manifest.json", "train")
    assert "staging" not in capsys.readouterr().err


def test_remote_dataset_stages_unlocked_where_the_cache_keeps_no_locks(remote_dataset, tmp_path, monkeypatch,
                                                                       caplog):
    # flock on some NFS and FUSE mounts fails with ENOLCK; each copy is renamed into place, so staging goes on.
    from gristmill.tokenize.shards import TokenDataset

    def no_locks(f, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    local, url = remote_dataset
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING):
        assert _rows(TokenDataset(url, "train")) == _rows(TokenDataset(local, "train"))
    (staged,) = (tmp_path / "cache" / "datasets").iterdir()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(staged / ".lock") in warnings[0]

    def bad_fd(f, op):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(fcntl, "flock", bad_fd)
    with pytest.raises(OSError) as e:
        TokenDataset(url, "validation")
    assert e.value.errno == errno.EBADF


def test_remote_dataset_stages_only_the_split_it_reads(remote_dataset, tmp_path):
    from gristmill.tokenize.shards import TokenDataset

    local, url = remote_dataset
    TokenDataset(url, "validation")
    (staged,) = (tmp_path / "cache" / "datasets").iterdir()
    names = set(files_under(staged)) - {".lock"}
    assert names == {"manifest.json", "tokenizer.json"} | {n for n in files_under(local) if n.startswith("validation")}


def test_remote_dataset_copy_is_checked_and_a_rewrite_gets_a_new_folder(remote_dataset, remote_root, tmp_path):
    from gristmill.tokenize.shards import TokenDataset

    local, url = remote_dataset
    shard = remote_root / "ds" / "tokens" / "train-00000.arrow"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:-100])
    with pytest.raises(UserError, match=r"train-00000.arrow is [\d,]+ bytes, the manifest says [\d,]+: it was cut"):
        TokenDataset(url, "train")
    (staged,) = (tmp_path / "cache" / "datasets").iterdir()
    assert not any(n.startswith("train-00000") for n in os.listdir(staged))  # no half copy is left to reuse
    # damaged in place, the same size and every id still inside the vocabulary: the copy's sha256 is not the
    # manifest's (the open-time checks alone read it as good rows)
    flipped = bytearray(whole)
    flipped[len(whole) // 3] ^= 1
    shard.write_bytes(bytes(flipped))
    with pytest.raises(UserError, match=r"train-00000.arrow does not match the sha256 in gmtest://ds/tokens/manifest"):
        TokenDataset(url, "train")
    assert not any(n.startswith("train-00000") for n in os.listdir(staged))
    shard.write_bytes(whole)
    assert _rows(TokenDataset(url, "train")) == _rows(TokenDataset(local, "train"))
    # The dataset written again (another manifest): a fresh folder, never the stale copy.
    m = remote_root / "ds" / "tokens" / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"seed": 5', b'"seed": 6'))
    TokenDataset(url, "train")
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


def test_remote_dataset_errors_are_one_line(remote_dataset, remote_root):
    from gristmill.tokenize.shards import TokenDataset

    _, url = remote_dataset
    with pytest.raises(UserError, match="no token dataset at gmtest://nowhere: gmtest://nowhere/manifest.json does"):
        TokenDataset(PREFIX + "nowhere", "train")
    m = remote_root / "ds" / "tokens" / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"path": "train-00000.arrow"', b'"path": "../../train-00000.arrow"'))
    with pytest.raises(UserError, match="is not a plain file name beside the manifest"):
        TokenDataset(url, "train")
    with pytest.raises(UserError, match="no Beam filesystem for nofs:// paths"):
        TokenDataset("nofs://bucket/tokens", "train")
    m.write_bytes(m.read_bytes().replace(b'"path": "../../train-00000.arrow"', b'"path": "train-00000.arrow"'))
    (remote_root / "ds" / "tokens" / "train-00001.arrow").unlink()
    with pytest.raises(UserError, match=f"^cannot copy {url}/train-00001.arrow: ") as e:
        TokenDataset(url, "train")
    assert len(str(e.value).splitlines()) == 1
    (staged,) = (Path(os.environ["GRISTMILL_CACHE"]) / "datasets").iterdir()
    names = os.listdir(staged)
    assert "train-00000.arrow" in names and not [n for n in names if ".part" in n]  # no half copy is left


def test_verify_reads_a_remote_dataset_from_the_remote(remote_dataset, remote_root, tmp_path, capsys):
    from gristmill.pipeline.cli import main
    from gristmill.tokenize.shards import TokenDataset

    local, url = remote_dataset
    assert main(["tokenize", "verify", url, "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{url}: ") and out[0].endswith(", 0 problem(s)")
    assert main(["tokenize", "verify", PREFIX + "nowhere"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: no token dataset at {PREFIX}nowhere: {PREFIX}nowhere/"
                                               f"manifest.json does not exist")
    # Training staged a good copy; then the remote shard is damaged in place (same size) and another is gone.
    # verify reads the remote bytes, not the copy: both shards named by URL, the rest checked, exit 1.
    TokenDataset(url, "train")
    (staged,) = (tmp_path / "cache" / "datasets").iterdir()
    cached = files_under(staged)
    shard = remote_root / "ds" / "tokens" / "train-00000.arrow"
    flipped = bytearray(shard.read_bytes())
    flipped[len(flipped) // 3] ^= 1
    shard.write_bytes(bytes(flipped))
    gone = sorted((remote_root / "ds" / "tokens").glob("validation-*.arrow"))[0]
    gone.unlink()
    assert main(["tokenize", "verify", url, "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    shards = len(list(local.glob("*.arrow")))
    assert out[-1].startswith(f"{url}: {shards} shard(s) checked, ") and out[-1].endswith(", 3 problem(s)")
    assert out[0].startswith(f"shard {url}/train-00000.arrow is damaged: its sha256 is ")
    assert out[1].startswith(f"shard {url}/train-00000.arrow is damaged: its sequence ")  # the bit: a high one
    assert out[2].startswith(f"cannot copy {url}/{gone.name}: ") and len(out) == 4
    assert files_under(staged) == cached  # the cache is left as it was: no fetched copy stays, none replaced


def test_mixture_of_remote_sources_trains_on_the_same_batches(remote_dataset, remote_root, tmp_path):
    from gristmill.mixtures import build as mixbuild
    from gristmill.mixtures.loader import MixtureLoader
    from gristmill.mixtures.spec import spec_from_dict

    local, url = remote_dataset
    shutil.copytree(local, tmp_path / "local2")
    shutil.copytree(local, remote_root / "ds2" / "tokens")
    built = {}
    for kind, a, b in (("local", str(local), str(tmp_path / "local2")), ("remote", url, PREFIX + "ds2/tokens")):
        spec = spec_from_dict({"sources": [{"name": "web", "manifest": a}, {"name": "wiki", "manifest": b,
                                                                             "domain": "wiki"}],
                               "budget_tokens": 20_000, "seed": 3, "weighting": {"method": "temperature", "temperature": 2.0}},
                              tmp_path)
        path = tmp_path / kind / "mixture.json"
        mixbuild.write_mixture(mixbuild.build(spec, path), path)
        built[kind] = path
    remote = json.loads(built["remote"].read_text())
    assert [s["manifest"] for s in remote["sources"]] == [url + "/manifest.json", PREFIX + "ds2/tokens/manifest.json"]
    assert remote["sources"][0]["shards"][0]["path"] == url + "/train-00000.arrow"
    batches = {k: [np.asarray(b).tobytes() for _, b in zip(range(12), MixtureLoader(p, 3, as_numpy=True))]
               for k, p in built.items()}
    assert batches["remote"] == batches["local"] and len(batches["local"]) == 12
    val = {k: [np.asarray(b).tobytes() for b in MixtureLoader(p, 3, as_numpy=True).validation("wiki")]
           for k, p in built.items()}
    assert val["remote"] == val["local"] and val["local"]
    # A remote shard gone missing is caught when the mixture is built, in one line.
    (remote_root / "ds2" / "tokens" / "train-00000.arrow").unlink()
    with pytest.raises(UserError, match=r"source 'wiki': shard gmtest://ds2/tokens/train-00000.arrow is missing"):
        mixbuild.build(spec, tmp_path / "remote" / "again.json")


def test_training_evaluation_and_export_on_a_remote_source(remote_dataset, remote_root, tmp_path):
    from gristmill.mixtures import build as mixbuild
    from gristmill.mixtures.spec import spec_from_dict
    from gristmill.trainer.config import TrainConfig
    from gristmill.trainer.evaluate import evaluate_run
    from gristmill.trainer.export import export
    from gristmill.trainer.train import train

    local, url = remote_dataset
    spec = spec_from_dict({"sources": [{"name": "web", "manifest": url}], "budget_tokens": 5_000, "seed": 0,
                           "weighting": {"method": "explicit", "proportions": {"web": 1.0}}}, tmp_path)
    mixture = tmp_path / "mix" / "mixture.json"
    mixbuild.write_mixture(mixbuild.build(spec, mixture), mixture)
    cfg = TrainConfig(model="tiny", data={"mixture": str(mixture)}, steps=2, batch_size=4, micro_batch_size=4,
                      warmup_steps=0, precision="fp32", out_dir=str(tmp_path / "run"), eval_every=2,
                      eval_max_sequences=4)
    train(cfg, verbose=False)
    offline = evaluate_run(tmp_path / "run", max_sequences=4)["sets"]["web"]
    inline = json.loads((tmp_path / "run" / "eval.jsonl").read_text().splitlines()[-1])["sets"]["web"]
    assert offline["loss"] == pytest.approx(inline["loss"], rel=1e-6) and offline["tokens"] == 4 * 63
    out = export(tmp_path / "run", tmp_path / "hf")
    assert (out / "tokenizer.json").read_bytes() == (local / "tokenizer.json").read_bytes()
