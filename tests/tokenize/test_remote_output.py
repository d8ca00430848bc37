"""A recipe whose output is not a local folder (gs://, s3://) writes the same token dataset, byte for byte.

`gmtest://` stands in for an object store: a Beam FileSystem that keeps its objects under a local root, reached
only through Beam's FileSystems API, with no folders to make (as on GCS). A step that used the local file API on
the output path would write a stray `gmtest:` folder in the working directory, or miss its files.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil

import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

from gristmill.errors import UserError
from gristmill.pipeline.docio import CreateDocuments
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext
from gristmill.tokenize.stages import Tokenize, TrainTokenizer

PREFIX = "gmtest://"
BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


class MappedFileSystem(LocalFileSystem):
    """gmtest://a/b is the local file ROOT/a/b; listing is by prefix, as on an object store."""

    ROOT = ""

    @classmethod
    def scheme(cls):
        return "gmtest"

    def _local(self, path: str) -> str:
        assert path.startswith(PREFIX), path
        return os.path.join(self.ROOT, path[len(PREFIX):])

    def _remote(self, path: str) -> str:
        return PREFIX + os.path.relpath(path, self.ROOT)

    def has_dirs(self):
        return False

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        head, tail = posixpath.split(path[len(PREFIX):])
        return PREFIX + head, tail

    def mkdirs(self, path):
        pass  # object stores have no folders

    def _list(self, dir_or_prefix):
        local = self._local(dir_or_prefix)
        top = local if os.path.isdir(local) else os.path.dirname(local)
        for root, _, files in os.walk(top):
            for name in files:
                full = os.path.join(root, name)
                if full.startswith(local):
                    yield FileMetadata(self._remote(full), os.path.getsize(full), os.path.getmtime(full))

    def match(self, patterns, limits=None):
        results = []
        for pattern in patterns:
            if not any(c in pattern for c in "*?["):
                found = [self.metadata(pattern)] if self.exists(pattern) else []
                results.append(MatchResult(pattern, found))
                continue
            prefix = pattern[:min(pattern.index(c) for c in "*?[" if c in pattern)]
            regex = self.translate_pattern(pattern)
            results.append(MatchResult(pattern, [m for m in self._list(prefix) if re.match(regex, m.path)]))
        return results

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        for a, b in zip(sources, destinations):
            os.makedirs(os.path.dirname(self._local(b)), exist_ok=True)
            shutil.copyfile(self._local(a), self._local(b))

    def rename(self, sources, destinations):  # object stores rename by copy and delete
        self.copy(sources, destinations)
        self.delete(sources)

    def exists(self, path):
        return os.path.isfile(self._local(path))  # a prefix is not an object

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for p in paths:
            assert os.path.isfile(self._local(p)), f"{p} is not an object"
            os.remove(self._local(p))


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
