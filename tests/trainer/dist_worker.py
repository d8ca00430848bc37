"""Run under torchrun by test_parallel.py: trains the same config in every parallel mode, plus interrupted and
resumed runs, and has rank 0 write every run's per-step losses to a JSON file."""
import json
import os
import sys
from pathlib import Path

from gristmill.trainer.config import TrainConfig
from gristmill.trainer.train import shutdown, train


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    results = {}
    for name, run in spec["runs"].items():
        cfg = TrainConfig(**{**spec["config"], "parallel": run["mode"], "out_dir": str(out / run.get("dir", name))})
        rows = train(cfg, resume=run.get("resume", "never"), stop_after=run.get("stop_after"), verbose=False)
        results[name] = [[r["step"], r["loss"], r["grad_norm"]] for r in rows]
    if results and int(os.environ.get("RANK", "0")) == 0:
        (out / "results.json").write_text(json.dumps(results))
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
