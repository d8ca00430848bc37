"""Shared fixtures for filter tests: a varied generated corpus and tiny models trained once per session."""
from __future__ import annotations

import http.server
import random
import threading
import time

import pytest

from gristmill.pipeline import textgen
from gristmill.pipeline.document import Document, stable_id

LANGS = ("fr", "de", "es", "it", "pt", "nl", "ru", "el", "ar", "hi", "zh", "ja")


def _edge_case(rng: random.Random, i: int) -> str:
    prose = textgen.english_text(rng, rng.randint(30, 200))
    k = i % 16
    if k == 0:
        return "#" + " #".join(prose.split()[: rng.randint(20, 120)])
    if k == 1:
        return "\n".join("- " + s for s in prose.split(". ") if s)
    if k == 2:
        return "\n".join(s + "..." for s in prose.split(". ") if s)
    if k == 3:
        line = prose.split("\n\n")[0]
        return "\n".join([line] * rng.randint(2, 6) + prose.split("\n\n"))
    if k == 4:
        return prose + "\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
    if k == 5:
        return prose + "\n\nfunction f(x) { return x + 1; } is the code we ran."
    if k == 6:
        return prose + "\n\nPlease enable JavaScript to view this page correctly.\nWe use cookies. See our privacy policy."
    if k == 7:
        return " ".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(rng.randint(50, 300)))
    if k == 8:
        return prose.replace(" ", "\n")
    if k == 9:
        return "x" * rng.randint(1001, 1500) + " " + prose
    if k == 10:
        return prose[: rng.randint(10, 300)]
    if k == 11:
        return "Short line.\n" * rng.randint(3, 30) + prose
    if k == 12:
        return prose.lower().replace(".", "")
    if k == 13:
        words = prose.split()
        return " ".join(w if rng.random() > 0.3 else "".join(rng.sample(w, len(w))) * 3 for w in words)
    if k == 14:
        return "… ".join(prose.split(". "))
    return "• " + "\n• ".join(prose.split(". ")[: rng.randint(3, 20)])


def varied_texts(n: int, seed: int) -> list[str]:
    """Generated prose, prose in site chrome, spam, boilerplate, other languages and edge cases, in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(textgen.english_text(rng, rng.choice((20, 45, 60, 120, 400))))
        elif kind == 1:
            chrome = textgen.boilerplate_lines(rng)
            cut = rng.randint(0, len(chrome))
            body = textgen.english_text(rng, rng.randint(30, 300))
            out.append("\n".join(chrome[:cut] + body.split("\n\n") + chrome[cut:]))
        elif kind == 2:
            out.append(textgen.spam_text(rng))
        elif kind == 3:
            out.append("\n".join(textgen.boilerplate_lines(rng)))
        elif kind == 4:
            out.append(textgen.language_text(LANGS[(i // 6) % len(LANGS)], rng, rng.randint(40, 300)))
        else:
            out.append(_edge_case(rng, i // 6))
    return out


def as_docs(texts: list[str]) -> list[Document]:
    return [Document(id=stable_id(str(i), t), url=f"http://example.com/{i}", text=t) for i, t in enumerate(texts)]


@pytest.fixture(scope="session")
def varied_docs() -> list[Document]:
    return as_docs(varied_texts(360, seed=11))


@pytest.fixture(scope="session")
def tiny_kenlm(tmp_path_factory):
    """A 3-gram model on part of the reference prose, with bucket thresholds from generated English pages."""
    from gristmill.filters import corpora
    from gristmill.filters.kenlm_filter import calibrate_buckets, train_kenlm

    path = tmp_path_factory.mktemp("kenlm") / "tiny.binary"
    train_kenlm(corpora.reference_documents()[::2], path, order=3)
    calibrate_buckets(path, corpora.english_pages(60, seed=7))
    return path


@pytest.fixture(scope="session")
def tiny_ccnet(tmp_path_factory):
    """A CCNet-style pair: a SentencePiece model trained by sentencepiece itself and a 3-gram KenLM model on that
    tokenization of the reference prose, as CCNet's <lang>.sp.model and <lang>.arpa.bin. (sp model, kenlm model)"""
    import sentencepiece

    from gristmill.filters import corpora
    from gristmill.filters.kenlm_filter import ccnet_normalize, train_kenlm

    folder = tmp_path_factory.mktemp("ccnet")
    docs = corpora.reference_documents()
    corpus = folder / "sp_corpus.txt"
    corpus.write_text("\n".join(ccnet_normalize(d) for d in docs) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "en.sp"), vocab_size=400,
                                             character_coverage=1.0, num_threads=1, minloglevel=2)
    sp_model = folder / "en.sp.model"
    lm = folder / "en.arpa.bin"
    train_kenlm(docs[::2], lm, order=3, sp_model=str(sp_model))
    return sp_model, lm


SMALL = dict(dim=16, epoch=5, bucket=20_000, quantize=False)


@pytest.fixture(scope="session")
def tiny_quality(tmp_path_factory):
    from gristmill.filters import corpora
    from gristmill.filters.classifier import TrainConfig
    from gristmill.filters.quality import train_quality

    path = tmp_path_factory.mktemp("quality") / "quality.bin"
    pos = corpora.reference_documents()[::3]
    train_quality(pos, corpora.crawl_pages(len(pos), seed=8), path, corpora.crawl_pages(100, seed=9),
                  TrainConfig(**SMALL))
    return path


@pytest.fixture(scope="session")
def tiny_toxicity(tmp_path_factory):
    from gristmill.filters.classifier import TrainConfig
    from gristmill.filters.toxicity import generated_comments, teacher_labels, train_toxicity

    path = tmp_path_factory.mktemp("toxicity") / "toxicity.bin"
    texts = generated_comments(2500, seed=10)
    metrics = train_toxicity(list(zip(teacher_labels(texts), texts)), path, "test", TrainConfig(**(SMALL | {"epoch": 15})))
    return path, metrics


@pytest.fixture(scope="session")
def lid_model():
    """The provisioned lid.176.ftz (install.sh runs `beam model provision`; tests never download)."""
    from gristmill.filters.models import default_path

    path = default_path("lid")
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `beam model fetch-lid` (install.sh does) before the tests")
    return path


@pytest.fixture(name="as_docs")
def as_docs_fixture():
    return as_docs


class LoopbackServer:
    """Loopback HTTP for model downloads (no network): serve(path, data, mode) answers GETs of that exact path;
    anything else is 404. `hits` counts the GETs of each path. Modes: "whole"; "short" announces all of it and
    sends half; "slow" sends it in pieces; "nolength" sends no Content-Length (the body ends when the connection
    closes, as HTTP/1.0 allows); "stall" announces its length, sends 10 bytes and waits for `release`."""

    MODES = ("whole", "short", "slow", "nolength", "stall")

    def __init__(self):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path not in outer.routes:
                    self.send_error(404)
                    return
                data, mode = outer.routes[self.path]
                self.send_response(200)
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "short":
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                elif mode == "slow":
                    for i in range(0, len(data), len(data) // 8 + 1):
                        self.wfile.write(data[i:i + len(data) // 8 + 1])
                        self.wfile.flush()
                        time.sleep(0.02)
                elif mode == "stall":
                    self.wfile.write(data[:10])
                    self.wfile.flush()
                    outer.release.wait(10)
                else:
                    self.wfile.write(data)
                    self.close_connection = mode == "nolength"

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, data: bytes, mode: str = "whole") -> str:
        """Serve `data` at `path` (from "/"); returns its URL."""
        assert mode in self.MODES, mode
        self.routes[path] = (data, mode)
        return self.base + path


@pytest.fixture()
def server():
    s = LoopbackServer()
    yield s
    s.release.set()
    s.httpd.shutdown()
    s.httpd.server_close()
