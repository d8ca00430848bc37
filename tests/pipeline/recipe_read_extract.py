"""Test recipe: only the WARC reader, text extraction and the document writer."""
from gristmill.pipeline.docio import WriteDocuments
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.warc import ReadWarc

NAME = "read_extract"
PARAMS = {"doc_shards": 3}


def stages(p):
    return [ReadWarc("Read"), ExtractText("Extract"), WriteDocuments("WriteDocuments", shards=p["doc_shards"])]
