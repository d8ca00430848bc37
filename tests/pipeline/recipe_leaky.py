"""Test recipe with a stage that loses documents without counting them: `beam run` must notice and fail."""
import apache_beam as beam

from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.stages import Stage, StageCounters
from gristmill.pipeline.warc import ReadWarc

PARAMS = {}


class _LeakFn(beam.DoFn):
    def setup(self):
        self.counters = StageCounters("Leaky")

    def process(self, doc):
        self.counters.inc("in")
        if doc.url.endswith("3"):  # lost, and counted neither as kept nor as dropped
            return
        self.counters.inc("kept")
        yield doc


class Leaky(Stage):
    label = "Leaky"

    def expand(self, pcoll, ctx):
        return pcoll | self.label >> beam.ParDo(_LeakFn())


def stages(p):
    return [ReadWarc("Read"), ExtractText("Extract"), Leaky()]
