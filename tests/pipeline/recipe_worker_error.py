"""Test recipe whose stage finds a user mistake inside a worker: `beam run` must end with that one line."""
import apache_beam as beam

from gristmill.errors import UserError
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.stages import Stage
from gristmill.pipeline.warc import ReadWarc

PARAMS = {}


def _refuse(doc):
    raise UserError(f"stage Refuse: page {doc.url} needs a setting this recipe lacks")


class Refuse(Stage):
    label = "Refuse"

    def expand(self, pcoll, ctx):
        return pcoll | self.label >> beam.Map(_refuse)


def stages(p):
    return [ReadWarc("Read"), ExtractText("Extract"), Refuse()]
