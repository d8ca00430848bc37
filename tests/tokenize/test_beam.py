"""The Beam stages and the `beam tokenize` commands give the same bytes as the in-process driver."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json

import pytest

from gristmill.pipeline.docio import CreateDocuments
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext
from gristmill.tokenize.encode import TokenizeConfig, tokenize_documents
from gristmill.tokenize.stages import Tokenize, TrainTokenizer
from gristmill.tokenize.train import save_tokenizer, select_sample, train_tokenizer

# Threads rather than worker processes: concurrent bundles in arbitrary order, without process start-up.
BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
CONFIG = TokenizeConfig(seq_len=64, shard_bytes=64 * 4 * 200, validation_fraction=0.1)


def same_files(a, b, names):
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    return all(digest(a / n) == digest(b / n) for n in names)


def test_beam_stages_match_the_local_driver_byte_for_byte(docs, tmp_path):
    stages = [
        CreateDocuments("Create", docs),
        TrainTokenizer("TrainTokenizer", vocab_size=900, sample_docs=300),
        Tokenize("Tokenize", seq_len=CONFIG.seq_len, shard_bytes=CONFIG.shard_bytes,
                 validation_fraction=CONFIG.validation_fraction),
    ]
    ctx = RunContext(output=str(tmp_path / "run"), seed=5, recipe_name="cc_test", recipe_hash="f00d")
    stats = run_stages(stages, ctx, BEAM_ARGS)
    out = tmp_path / "run" / "tokens"

    # the tokenizer is the one trained locally on the same deterministic sample
    local_tok = tmp_path / "local_tok.json"
    save_tokenizer(train_tokenizer(select_sample(docs, 300, seed=5), 900), local_tok)
    assert (out / "tokenizer.json").read_bytes() == local_tok.read_bytes()

    local = tmp_path / "local"
    manifest, counts = tokenize_documents(docs, str(local_tok), local, CONFIG, seed=5, source="cc_test",
                                          recipe_sha256="f00d")
    assert json.loads((out / "manifest.json").read_text()) == manifest
    names = sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert same_files(out, local, names)

    node = stats["stages"]["Tokenize"]
    assert stats["balanced"]
    assert node["in"] == counts["Tokenize/in"] and node["kept"] == counts["Tokenize/kept"]
    assert node["dropped"]["empty"] == counts["Tokenize/dropped/empty"]
    assert node["tokens_emitted"] == manifest["splits"]["train"]["tokens"] + manifest["splits"]["validation"]["tokens"]
    assert stats["stages"]["TrainTokenizer"]["sample_documents"] == 300


def test_only_empty_documents_count_no_tokenizer_instead_of_failing(tmp_path):
    # TrainTokenizer then yields nothing; without a default the side input reached the encoder as an
    # EmptySideInput object, taken for a tokenizer path ("tokenizer file <...EmptySideInput...> does not exist")
    from gristmill.pipeline.document import Document

    docs = [Document(id=f"d{i}", url="u", text="") for i in range(3)]
    stages = [CreateDocuments("Create", docs), TrainTokenizer(vocab_size=300, sample_docs=10),
              Tokenize(seq_len=16, shard_bytes=4096)]
    stats = run_stages(stages, RunContext(output=str(tmp_path / "run")), BEAM_ARGS)
    assert stats["balanced"]
    node = stats["stages"]["Tokenize"]
    assert node["in"] == 3 and node["dropped"] == {"empty": 3} and node["no_tokenizer"] == 1
    assert not (tmp_path / "run" / "tokens" / "manifest.json").exists()


def test_commands_train_and_encode_existing_document_shards(docs, tmp_path, capsys):
    from gristmill.pipeline.cli import main

    (tmp_path / "run" / "documents").mkdir(parents=True)
    for k in range(2):
        with gzip.open(tmp_path / "run" / "documents" / f"part-{k:05d}-of-00002.jsonl.gz", "wt") as f:
            f.writelines(d.to_json() + "\n" for d in docs[k::2])
    (tmp_path / "run" / "stats.json").write_text('{"recipe": {"sha256": "cafe"}}')
    glob = str(tmp_path / "run" / "documents" / "*.jsonl.gz")

    assert main(["tokenize", "train", glob, "--output", str(tmp_path / "tok"), "--vocab-size", "700",
                 "--sample-docs", "200", "--seed", "1"]) == 0
    assert "sha256=" in capsys.readouterr().out
    tok = tmp_path / "tok" / "tokenizer.json"
    save_tokenizer(train_tokenizer(select_sample(docs, 200, seed=1), 700), tmp_path / "ref.json")
    assert tok.read_bytes() == (tmp_path / "ref.json").read_bytes()

    assert main(["tokenize", "encode", glob, "--tokenizer", str(tok), "--output", str(tmp_path / "tokens"),
                 "--seq-len", "64", "--shard-mb", str(CONFIG.shard_bytes / 2**20), "--validation-fraction", "0.1",
                 "--seed", "1", "--buckets", "3", *BEAM_ARGS]) == 0
    manifest, _ = tokenize_documents(docs, str(tok), tmp_path / "local", dataclasses.replace(CONFIG, buckets=3),
                                     seed=1, source="tokens", recipe_sha256="cafe")
    assert json.loads((tmp_path / "tokens" / "manifest.json").read_text()) == manifest
    arrow = sorted(p.name for p in (tmp_path / "local").glob("*.arrow"))
    assert same_files(tmp_path / "tokens", tmp_path / "local", arrow)
    assert "warning" not in capsys.readouterr().err

    # a third file cut short: skipped and counted, and the command says so
    whole = (tmp_path / "run" / "documents" / "part-00000-of-00002.jsonl.gz").read_bytes()
    (tmp_path / "run" / "documents" / "part-00002-of-00003.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    assert main(["tokenize", "encode", glob, "--tokenizer", str(tok), "--output", str(tmp_path / "tokens2"),
                 "--seq-len", "64", *BEAM_ARGS]) == 0
    assert "warning: skipped while reading: unreadable_file:EOFError 1" in capsys.readouterr().err


def test_encode_counts_and_skips_documents_with_fields_of_the_wrong_type(docs, tokenizer_path, tmp_path, capsys):
    # "text": null or "repeats": "2" once reached the encoder and failed the whole run inside Beam
    from gristmill.pipeline.cli import main

    good = docs[:5]
    bad = [{"id": "b1", "url": "u", "text": None}, {"id": "b2", "url": "u", "text": "x", "repeats": "2"},
           {"id": "b3", "url": "u", "text": "x", "repeats": 2.5}]
    lines = [d.to_json() for d in good[:2]] + [json.dumps(b) for b in bad] + [d.to_json() for d in good[2:]]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["tokenize", "encode", str(tmp_path / "d.jsonl"), "--tokenizer", tokenizer_path, "--output",
                 str(tmp_path / "tokens"), "--seq-len", "64", "--validation-fraction", "0", *BEAM_ARGS]) == 0
    assert "skipped while reading: bad_json:TypeError 3" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] == sum(d.repeats for d in good if d.text)


@pytest.mark.parametrize("argv, message", [
    (["tokenize", "encode", "/nonexistent/*.jsonl.gz", "--tokenizer", "t.json", "--output", "o"], "no document files"),
    (["tokenize", "train", "/nonexistent/*.jsonl.gz", "--output", "o"], "no document files"),
    (["tokenize", "encode", __file__, "--tokenizer", __file__, "--output", "o", "--buckets", "0"], "buckets"),
    # int() of these raised ValueError and OverflowError: "error: ValueError: ..." and exit status 1
    (["tokenize", "encode", __file__, "--tokenizer", __file__, "--output", "o", "--shard-mb", "nan"],
     "--shard-mb must be a positive number of MiB, not nan"),
    (["tokenize", "encode", __file__, "--tokenizer", __file__, "--output", "o", "--shard-mb", "inf"],
     "--shard-mb must be a positive number of MiB, not inf"),
])
def test_command_mistakes_are_one_line_errors(argv, message, capsys):
    from gristmill.pipeline.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_bad_tokenizer_path_is_an_error(docs, tmp_path, capsys):
    from gristmill.pipeline.cli import main

    (tmp_path / "d.jsonl").write_text(docs[1].to_json() + "\n")
    assert main(["tokenize", "encode", str(tmp_path / "d.jsonl"), "--tokenizer", str(tmp_path / "no.json"),
                 "--output", str(tmp_path / "o")]) == 2
    assert "tokenizer file" in capsys.readouterr().err


def test_a_token_dataset_folder_for_tokenizer_names_the_file_inside(docs, tmp_path, capsys):
    from gristmill.pipeline.cli import main

    (tmp_path / "d.jsonl").write_text(docs[1].to_json() + "\n")
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "tokenizer.json").write_text("{}")
    assert main(["tokenize", "encode", str(tmp_path / "d.jsonl"), "--tokenizer", str(tmp_path / "tokens"),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0] and str(tmp_path / "tokens" / "tokenizer.json") in err[0]


def test_help_has_examples(capsys):
    from gristmill.pipeline.cli import main

    for sub in ("train", "encode", "verify"):
        with pytest.raises(SystemExit):
            main(["tokenize", sub, "--help"])
        assert f"beam tokenize {sub} " in capsys.readouterr().out


def test_corrupt_document_file_is_a_one_line_error(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    (tmp_path / "part.jsonl.gz").write_bytes(b"not gzip")
    assert main(["tokenize", "train", str(tmp_path / "part.jsonl.gz"), "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read")


@pytest.mark.parametrize("narrow", [True, False])
def test_beam_with_a_given_tokenizer_and_bucket_count_matches_the_driver(docs, tokenizer_path, tmp_path,
                                                                         monkeypatch, narrow):
    # ids cross the shuffle as uint16 for vocabularies up to 65,536 and as int32 above: both give the same bytes
    import gristmill.tokenize.stages as S

    monkeypatch.setattr(S, "_narrow", lambda vocab_size: narrow)
    config = TokenizeConfig(seq_len=CONFIG.seq_len, shard_bytes=CONFIG.shard_bytes,
                            validation_fraction=CONFIG.validation_fraction, buckets=3)
    stages = [
        CreateDocuments("Create", docs),
        Tokenize("Tokenize", seq_len=config.seq_len, shard_bytes=config.shard_bytes,
                 validation_fraction=config.validation_fraction, tokenizer=tokenizer_path, buckets=3),
    ]
    ctx = RunContext(output=str(tmp_path / "run"), seed=2, recipe_name="cc_test", recipe_hash="f00d")
    run_stages(stages, ctx, BEAM_ARGS)
    out = tmp_path / "run" / "tokens"
    local = tmp_path / "local"
    manifest, _ = tokenize_documents(docs, tokenizer_path, local, config, seed=2, source="cc_test",
                                     recipe_sha256="f00d")
    assert json.loads((out / "manifest.json").read_text()) == manifest
    names = sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    assert same_files(out, local, names)


@pytest.mark.parametrize("flags, message", [
    (["--vocab-size", "1000000000"], "--vocab-size must be at most 16,777,216"),  # was a Rust abort, rc 134
    (["--vocab-size", str(10**20)], "--vocab-size must be at most"),  # was OverflowError
    (["--vocab-size", "100"], "--vocab-size must be at least 259"),
    # was taken as "the default", 32000
    (["--vocab-size", "0"], "--vocab-size must be at least 259 (256 bytes + specials), not 0"),
    (["--min-frequency", "-1"], "--min-frequency must be >= 0"),  # was OverflowError
    (["--min-frequency", str(10**20)], "--min-frequency must be below 2**63"),
])
def test_train_bounds_vocabulary_and_min_frequency(docs, tmp_path, capsys, flags, message):
    from gristmill.pipeline.cli import main

    (tmp_path / "d.jsonl").write_text("".join(d.to_json() + "\n" for d in docs[:20]))
    assert main(["tokenize", "train", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "t"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_train_into_a_file_is_one_line_before_training(docs, tmp_path, capsys):
    from gristmill.pipeline.cli import main

    (tmp_path / "d.jsonl").write_text("".join(d.to_json() + "\n" for d in docs[:20]))
    (tmp_path / "out").write_text("a file")
    # was "error: FileExistsError: [Errno 17] ..." with exit status 1, after training
    assert main(["tokenize", "train", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "out" / "tok")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: output {tmp_path / 'out' / 'tok'} cannot be a folder: {tmp_path / 'out'} is a file"]


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 10**9}, "vocab_size must be at most"), ({"vocab_size": 4096.0}, "vocab_size must be a whole"),
    ({"vocab_size": 0}, r"vocab_size must be at least 259 \(256 bytes \+ specials\), not 0"),  # was the default
    ({"min_frequency": -1}, "min_frequency must be >= 0"), ({"min_frequency": 2**64}, "min_frequency must be below"),
])
def test_train_stage_parameters_are_checked_when_the_recipe_is_built(kwargs, message):
    from gristmill.errors import UserError

    with pytest.raises(UserError, match=f"stage TrainTokenizer: {message}"):
        TrainTokenizer(**kwargs)
    with pytest.raises(UserError, match=message):
        train_tokenizer(["some text"], **{"vocab_size": 300, **kwargs})


@pytest.mark.parametrize("command", ["encode", "train"])
def test_an_input_naming_a_folder_is_one_line_suggesting_a_glob(tmp_path, capsys, command):
    from gristmill.pipeline.cli import main

    # encode exited 0 with an empty dataset (the folder counted as one unreadable file); train said
    # "cannot read DIR: Is a directory" without saying what to give
    (tmp_path / "docs").mkdir()
    extra = ["--tokenizer", str(tmp_path / "t.json")] if command == "encode" else []
    assert main(["tokenize", command, str(tmp_path / "docs"), *extra, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and f"'{tmp_path / 'docs' / '*.jsonl.gz'}'" in err[0], err
    assert not (tmp_path / "out").exists()
