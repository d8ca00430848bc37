"""TrainTokenizer and Tokenize (gristmill.tokenize.stages) against independent references: the shards read back
with pyarrow hold, for every kept document, exactly the ids the `tokenizers` library gives its text plus EOS,
`repeats` times in train and once in validation; the counters balance by reason under the stage's own label;
the parameters a recipe gives (min_frequency, domain, a tokenizer path, defaults) are the ones used."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from tokenizers import Tokenizer
from tok_corpus import make_docs

from gristmill.errors import UserError
from gristmill.pipeline.docio import CreateDocuments
from gristmill.pipeline.document import Document
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext, Stage
from gristmill.tokenize import stages as S
from gristmill.tokenize.encode import TokenizeConfig, split_of
from gristmill.tokenize.stages import Tokenize, TrainTokenizer
from gristmill.tokenize.train import sample_key, save_tokenizer, select_sample, train_tokenizer

BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def split_stream(folder: Path, split: str, eos: int, pad: int) -> Counter:
    """The documents of a split as pyarrow reads them: all rows of all shards, PAD removed, cut after each EOS."""
    flat = []
    for path in sorted(folder.glob(f"{split}-*.arrow")):
        with pa.memory_map(str(path)) as f:
            table = pa.ipc.open_file(f).read_all()
        for row in table.column("input_ids").to_pylist():
            flat += [i for i in row if i != pad]
    docs, cur = Counter(), []
    for i in flat:
        if i == eos:
            docs[tuple(cur)] += 1
            cur = []
        else:
            cur.append(i)
    assert cur == []  # every document ends with EOS
    return docs


class FillText(Stage):
    """Gives every document text, after TrainTokenizer has seen them all empty."""

    label = "Fill"

    def expand(self, docs, ctx):
        return docs | "Fill" >> beam.Map(lambda d: dataclasses.replace(d, text="filled in later"))


def test_shards_hold_each_documents_own_ids_repeats_times_and_counters_balance(tmp_path):
    docs = make_docs(150, seed=3)
    docs += [Document(id="zero", url="u", text="never emitted", repeats=0),
             Document(id="surrogate", url="u", text="lone \ud800 surrogate here", repeats=2)]
    seed = 4
    stages = [CreateDocuments("Create", docs),
              TrainTokenizer("Train2", vocab_size=600, sample_docs=60, min_frequency=8),
              Tokenize("Tok2", seq_len=32, shard_bytes=32 * 4 * 20, validation_fraction=0.2, domain="code",
                       buckets=2)]
    stats = run_stages(stages, RunContext(output=str(tmp_path / "run"), seed=seed, recipe_name="r",
                                          recipe_hash="ab"), BEAM_ARGS)
    out = tmp_path / "run" / "tokens"

    # the tokenizer: trained on the seeded sample with the stage's own min_frequency
    save_tokenizer(train_tokenizer(select_sample(docs, 60, seed=seed), 600, min_frequency=8), tmp_path / "ref.json")
    assert (out / "tokenizer.json").read_bytes() == (tmp_path / "ref.json").read_bytes()
    sample = select_sample(docs, 60, seed=seed)
    assert "lone \ufffd surrogate here" in sample  # the sample holds the lone surrogate: it once failed the run
    train = stats["stages"]["Train2"]
    assert train["sample_documents"] == 60 and train["sample_chars"] == sum(map(len, sample))

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["domain"] == "code" and manifest["seq_len"] == 32
    tok = manifest["tokenizer"]
    assert tok["sha256"] == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()

    ref = Tokenizer.from_file(str(out / "tokenizer.json"))
    expected = {"train": Counter(), "validation": Counter()}
    unique = emitted = 0
    kept = {"train": 0, "validation": 0}
    for d in docs:
        if d.repeats < 1 or not d.text:
            continue
        ids = tuple(ref.encode(d.text.replace("\ud800", "\ufffd"), add_special_tokens=False).ids)
        split = split_of(d.id, seed, 0.2)
        copies = d.repeats if split == "train" else 1
        expected[split][ids] += copies
        kept[split] += 1
        unique += len(ids) + 1
        emitted += (len(ids) + 1) * copies
    assert kept["validation"] > 5 and kept["train"] > 5
    for split in ("train", "validation"):
        assert split_stream(out, split, tok["eos_id"], tok["pad_id"]) == expected[split]
    assert len(list(out.glob("train-*.arrow"))) >= 2  # the train split spans several shards

    node = stats["stages"]["Tok2"]
    n_empty = sum(1 for d in docs if not d.text and d.repeats >= 1)
    assert node["in"] == len(docs)
    assert node["dropped"] == {"empty": n_empty, "zero_repeats": 1}
    assert node["in"] == node["kept"] + sum(node["dropped"].values())
    assert node["kept"] == kept["train"] + kept["validation"]
    assert (node["documents_train"], node["documents_validation"]) == (kept["train"], kept["validation"])
    assert node["tokens_unique"] == unique and node["tokens_emitted"] == emitted
    assert emitted == manifest["splits"]["train"]["tokens"] + manifest["splits"]["validation"]["tokens"]
    assert "Tokenize" not in stats["stages"] and "TrainTokenizer" not in stats["stages"]


def test_a_given_tokenizer_wins_over_one_trained_in_the_same_pipeline(docs, tokenizer_path, tmp_path):
    stages = [CreateDocuments("Create", docs[:60]), TrainTokenizer(vocab_size=300, sample_docs=20),
              Tokenize(seq_len=16, shard_bytes=4096, tokenizer=tokenizer_path, subdir="given")]
    run_stages(stages, RunContext(output=str(tmp_path / "run")), BEAM_ARGS)
    given = Path(tokenizer_path).read_bytes()
    assert (tmp_path / "run" / "given" / "tokenizer.json").read_bytes() == given
    manifest = json.loads((tmp_path / "run" / "given" / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(given).hexdigest()


def test_without_a_tokenizer_it_uses_the_one_already_in_its_folder_or_says_how_to_get_one(docs, tokenizer_path,
                                                                                           tmp_path):
    with pytest.raises(UserError, match=r"^stage Tok: no tokenizer: add a TrainTokenizer stage before it, or pass "
                                        r"tokenizer=PATH \(looked for .*tokens/tokenizer\.json\)$"):
        run_stages([CreateDocuments("Create", docs[:5]), Tokenize("Tok", seq_len=16, shard_bytes=4096)],
                   RunContext(output=str(tmp_path / "none")), BEAM_ARGS)
    (tmp_path / "run" / "tokens").mkdir(parents=True)
    (tmp_path / "run" / "tokens" / "tokenizer.json").write_bytes(Path(tokenizer_path).read_bytes())
    run_stages([CreateDocuments("Create", docs[:20]), Tokenize("Tok", seq_len=16, shard_bytes=4096)],
               RunContext(output=str(tmp_path / "run")), BEAM_ARGS)
    manifest = json.loads((tmp_path / "run" / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()


def test_documents_with_text_but_no_tokenizer_count_as_no_tokenizer(tmp_path):
    docs = [Document(id=f"d{i}", url="u", text="") for i in range(3)]
    stages = [CreateDocuments("Create", docs), TrainTokenizer(vocab_size=300, sample_docs=10), FillText(),
              Tokenize(seq_len=16, shard_bytes=4096)]
    stats = run_stages(stages, RunContext(output=str(tmp_path / "run")), BEAM_ARGS)
    node = stats["stages"]["Tokenize"]
    assert node["in"] == 3 and node["dropped"] == {"no_tokenizer": 3} and node["no_tokenizer"] == 1


def test_a_tokenizer_whose_bytes_per_token_are_unknown_is_refused_before_the_run(tokenizer_path, tmp_path):
    spec = json.loads(Path(tokenizer_path).read_text())
    spec["decoder"] = None
    (tmp_path / "t.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match=r"^stage Tok: the tokenizer's decoder \(none\) is neither byte-level"):
        Tokenize("Tok", tokenizer=str(tmp_path / "t.json")).validate(RunContext(output=str(tmp_path / "o")))


def test_stage_defaults_are_the_libraries():
    t = Tokenize()
    assert t.config == TokenizeConfig() and t.subdir == "tokens" and t.label == "Tokenize"
    assert (t.config.seq_len, t.config.shard_bytes, t.config.validation_fraction, t.config.domain) == (
        2048, 128 << 20, 0.01, "web")
    assert TrainTokenizer().sample_docs == 50_000 and TrainTokenizer().min_frequency == 2


@pytest.mark.parametrize("n", [0, -1])
def test_train_tokenizer_refuses_an_empty_sample(n):
    with pytest.raises(UserError, match=f"^stage T: sample_docs must be >= 1, not {n}$"):
        TrainTokenizer("T", sample_docs=n)
    assert TrainTokenizer("T", sample_docs=1).sample_docs == 1


def test_ids_cross_the_shuffle_as_uint16_exactly_while_they_fit():
    # uint16 holds 0..65535: a vocabulary of 65,536 ids fits, one of 65,537 does not
    assert np.iinfo(np.uint16).max == 65535
    assert S._narrow(65536) and not S._narrow(65537) and S._narrow(300)


def test_training_takes_a_lone_surrogate_as_the_replacement_character():
    # was UnicodeEncodeError from the trainer (and, in the Beam stage, from the runner's coder)
    texts = ["lone \ud800 surrogate and more words"] * 5 + ["other words here"] * 5
    repaired = [t.replace("\ud800", "\ufffd") for t in texts]
    assert train_tokenizer(texts, 300).to_str() == train_tokenizer(repaired, 300).to_str()


def test_tokenize_train_command_takes_a_document_with_a_lone_surrogate(docs, tmp_path, capsys):
    from gristmill.pipeline.cli import main

    lines = [d.to_json() for d in docs[1:20]]
    lines.append(json.dumps({"id": "s", "url": "u", "text": "lone \ud800 surrogate"}))  # valid JSON: "\ud800"
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["tokenize", "train", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "t"),
                 "--vocab-size", "300", "--sample-docs", "100"]) == 0
    assert "sha256=" in capsys.readouterr().out


def test_documents_sharing_an_id_give_a_sample_of_exactly_n_whatever_their_order(tmp_path):
    # the stage took every copy of a chosen id (3 documents for sample_docs=2), and select_sample the first
    # copies it met, so `tokenize train` on reordered input gave another tokenizer
    ids = sorted((f"d{i}" for i in range(10)), key=lambda i: sample_key(0, i))
    docs = [Document(id=ids[0], url="u", text=f"copy {k} of the first words") for k in (2, 0, 1)]
    docs += [Document(id=i, url="u", text=f"other words {i}") for i in ids[1:]]
    assert select_sample(docs, 2, 0) == select_sample(docs[::-1], 2, 0) == [
        "copy 0 of the first words", "copy 1 of the first words"]
    for k, order in enumerate((docs, docs[::-1])):
        out = tmp_path / f"run{k}"
        stats = run_stages([CreateDocuments("Create", order), TrainTokenizer(vocab_size=300, sample_docs=2)],
                           RunContext(output=str(out)), BEAM_ARGS)
        assert stats["stages"]["TrainTokenizer"]["sample_documents"] == 2
        ref = train_tokenizer(["copy 0 of the first words", "copy 1 of the first words"], 300)
        assert (out / "tokens" / "tokenizer.json").read_bytes() == ref.to_str(pretty=True).encode("utf-8")
