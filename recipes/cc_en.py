"""Common Crawl -> English pretraining data, as on the design card: one named stage per line.

Run:  beam run recipes/cc_en.py [--input GLOB] [--output DIR] [-p language=fr] [Beam options]
"""
from gristmill.pipeline.docio import WriteDocuments
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.warc import ReadWarc

NAME = "cc_en"

PARAMS = {
    "language": "en",        # fastText lid.176 label to keep; one parameter away from another language
    "doc_shards": 4,
}


def stages(p):
    return [
        ReadWarc("Read"),
        ExtractText("Extract"),
        WriteDocuments("WriteDocuments", shards=p["doc_shards"]),
    ]
