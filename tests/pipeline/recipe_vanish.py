"""Test recipe: the WARC reader, then a stage that, once the input is listed (as the pipeline is built), makes
the files named in $GRISTMILL_TEST_VANISH ("path=gone|folder|fifo,...") unreadable; then extraction and writing."""
import os

from gristmill.pipeline.docio import WriteDocuments
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.stages import Stage
from gristmill.pipeline.warc import ReadWarc

NAME = "vanish"
PARAMS = {}


class Vanish(Stage):
    label = "Vanish"

    def expand(self, pcoll, ctx):
        for item in filter(None, os.environ.get("GRISTMILL_TEST_VANISH", "").split(",")):
            path, _, how = item.partition("=")
            os.remove(path)
            if how == "folder":
                os.mkdir(path)
            elif how == "fifo":
                os.mkfifo(path)
        return pcoll


def stages(p):
    return [ReadWarc("Read"), Vanish(), ExtractText("Extract"), WriteDocuments("WriteDocuments", shards=2)]
