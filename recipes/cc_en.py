"""Common Crawl -> English pretraining tokens, as on the design card: one named stage per line.

    beam run recipes/cc_en.py [--input GLOB] [--output DIR] [-p key=value ...] [Beam pipeline options]

Examples:  -p language=fr                 another language (LID keeps French; English-only rules step aside)
           -p filter_mode=annotate        filters score and record, drop nothing (dedup still drops duplicates)
           -p filter_mode=off -p dedup=false -p tokenizer=out/cc_en/tokens/tokenizer.json   the raw baseline
"""
from gristmill.dedup.stages import BloomDedup, ExactDedup, LogCountResample, MinHashDedup
from gristmill.filters.c4 import C4QualityFilter
from gristmill.filters.fineweb import FineWebQualityFilter
from gristmill.filters.gopher import GopherQualityFilter, GopherRepetitionFilter
from gristmill.filters.kenlm_filter import KenLMFilter
from gristmill.filters.langid import LanguageIDFilter
from gristmill.filters.pii import PIIFormatter
from gristmill.filters.quality import QualityFilter
from gristmill.filters.toxicity import BadWordsFilter, ToxicityFilter
from gristmill.filters.url import URLFilter
from gristmill.pipeline.docio import WriteDocuments
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.stages import FilterStage
from gristmill.pipeline.warc import ReadWarc
from gristmill.tokenize.stages import TrainTokenizer, Tokenize

NAME = "cc_en"

PARAMS = {
    "url_filter": True,            # FineWeb's URL filter: UT1 adult blocklist, RefinedWeb's banned URL words
    "url_lists": "",               # folder from `beam model fetch-url-lists --out`; "" = provisioned
    "language": "en",              # fastText lid.176 label to keep
    "lid_threshold": 0.65,         # FineWeb's English threshold
    "filter_mode": "drop",         # drop | annotate (filters score and record, drop nothing) | off (no filter stages)
    "toxicity_threshold": 0.5,
    "quality_threshold": 0.5,      # DCLM-style classifier; annotate-only by default (see docs/filters.md)
    "lid_model": "",               # path or URL of a fastText LID model (lid.176.bin, GlotLID); "" = provisioned
    "kenlm_model": "",             # path or URL of a KenLM model; "" = provisioned
    "kenlm_sp_model": "",          # its SentencePiece model, for CCNet's published models (<lang>.sp.model)
    "quality_model": "",           # path or URL, e.g. DCLM's fastText classifier; "" = provisioned
    "toxicity_model": "",          # path or URL; "" = provisioned
    "pii": True,                   # FineWeb's PII step: emails and public IPs replaced (never drops a page)
    "dedup": True,
    "minhash_threshold": 0.8,      # near-duplicate Jaccard; bands x rows derived from it
    "resample_base": 10.0,         # duplicate cluster of c copies kept with weight 1 + log_base(c)
    "bloom_unit": "line",          # Dolma-style line dedup ("line" or "paragraph")
    "bloom_expected_keys": 10_000_000,
    "bloom_false_positive_rate": 1e-4,
    "bloom_load_from": "",         # an earlier run's output folder (or its bloom_filter/), for cross-run dedup
    "doc_shards": 4,
    "tokenizer": "",               # reuse this tokenizer.json instead of training one
    "vocab_size": 32000,
    "tokenizer_sample_docs": 50_000,
    "seq_len": 2048,
    "validation_fraction": 0.01,
    "token_buckets": 8,            # sort/pack units of the train split; one worker holds ~4 x tokens / buckets bytes
    "domain": "web",
}


def stages(p):
    mode = p["filter_mode"]
    if mode not in ("drop", "annotate", "off"):
        raise ValueError(f"filter_mode must be drop, annotate or off, not {mode!r}")
    # Gopher's stop words and the default KenLM/quality/toxicity models are English.
    english = p["language"] == "en"
    # FineWeb's order: the URL filter reads only the URL, so it runs before extraction and saves extracting
    # the pages it drops.
    url = [FilterStage("URL", URLFilter(lists=p["url_lists"] or None), mode=mode)] \
        if p["url_filter"] and mode != "off" else []
    filters = [
        FilterStage("LanguageID", LanguageIDFilter(languages=[p["language"]], threshold=p["lid_threshold"],
                                                  model=p["lid_model"] or None), mode=mode),
        FilterStage("GopherRepetition", GopherRepetitionFilter(), mode=mode),
        *([FilterStage("GopherQuality", GopherQualityFilter(), mode=mode)] if english else []),
        FilterStage("C4", C4QualityFilter(), mode=mode),
        FilterStage("FineWeb", FineWebQualityFilter(), mode=mode),
        *([FilterStage("BadWords", BadWordsFilter(), mode=mode),
           FilterStage("Toxicity", ToxicityFilter(threshold=p["toxicity_threshold"],
                                                  model=p["toxicity_model"] or None), mode=mode),
           FilterStage("KenLM", KenLMFilter(model=p["kenlm_model"] or None, sp_model=p["kenlm_sp_model"] or None),
                       mode="annotate"),
           FilterStage("Quality", QualityFilter(threshold=p["quality_threshold"],
                                                model=p["quality_model"] or None), mode="annotate")] if english else []),
    ] if mode != "off" else []
    dedup = [
        ExactDedup("ExactDedup"),
        MinHashDedup("MinHashDedup", threshold=p["minhash_threshold"]),
        LogCountResample("LogCountResample", base=p["resample_base"]),
        # After MinHash on purpose: stripping shared lines first would hide near duplicates.
        BloomDedup("BloomDedup", unit=p["bloom_unit"], expected_keys=p["bloom_expected_keys"],
                   false_positive_rate=p["bloom_false_positive_rate"], load_from=p["bloom_load_from"] or None),
    ] if p["dedup"] else []
    tokenizer = [] if p["tokenizer"] else [
        TrainTokenizer("TrainTokenizer", vocab_size=p["vocab_size"], sample_docs=p["tokenizer_sample_docs"])]
    return [
        ReadWarc("Read"),
        *url,
        ExtractText("Extract"),
        *filters,
        *dedup,
        # FineWeb masks PII last, after dedup; it only rewrites text, so it runs whatever filter_mode says.
        *([FilterStage("PII", PIIFormatter(), mode="drop")] if p["pii"] else []),
        WriteDocuments("WriteDocuments", shards=p["doc_shards"]),
        *tokenizer,
        Tokenize("Tokenize", seq_len=p["seq_len"], validation_fraction=p["validation_fraction"],
                 domain=p["domain"], tokenizer=p["tokenizer"] or None, buckets=p["token_buckets"]),
    ]
