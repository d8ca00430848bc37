"""The `mix` command: build a data mixture from token datasets, or sweep RegMix-style variations of one."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import load_spec
from gristmill.pipeline import fs

EPILOG = """\
examples:
  mix build mixture.yaml -o out/mixture.json
  mix sweep mixture.yaml -n 16 --concentration 10 -o out/sweep

A spec (YAML):
  sources:
    - {name: web,  manifest: out/tokens-web,  domain: web, max_epochs: 2}
    - {name: wiki, manifest: out/tokens-wiki, domain: reference}
    - {name: code, manifest: gs://bucket/out/code/tokens}   # remote: its shards are copied when training reads them
  budget_tokens: 200M
  seed: 0
  weighting: {method: temperature, temperature: 2.0}   # or explicit (proportions: {...}) or unimax (max_epochs: 4)
See docs/mixtures.md.
"""


def _build(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    fs.check_output_file(args.output)
    out = Path(args.output)
    mixture = mixbuild.build(spec, out)
    md = mixbuild.write_mixture(mixture, out)
    print(mixbuild.format_table(mixture), end="")
    print(f"wrote {out} and {md}", file=sys.stderr)


def _sweep(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    fs.check_output_folder(args.output)
    out = Path(args.output)
    index = mixbuild.sweep(
        spec, args.n, out, concentration=args.concentration, seed=args.seed, prior=args.prior
    )
    names = list(index["prior_proportions"])
    header = ["mixture", *names]
    rows = [["prior", *(f"{100 * index['prior_proportions'][n]:.1f}%" for n in names)]]
    rows += [[m["name"], *(f"{100 * m['proportions'][n]:.1f}%" for n in names)] for m in index["mixtures"]]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("  ".join([r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, len(r))]))
    print(f"wrote {len(index['mixtures'])} mixtures and {out / 'sweep.json'}", file=sys.stderr)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mix",
        description="Build data mixtures over token datasets, and sweeps of them for ablations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,sweep}")
    b = sub.add_parser(
        "build",
        help="write a mixture manifest and its table from a spec",
        description="Compute per-source proportions, tokens to draw and epochs; write MIXTURE.json and "
        "MIXTURE.md (the LLaMA-style table, also printed).",
        epilog="example:\n  mix build mixture.yaml -o out/mixture.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("spec", help="mixture spec (YAML)")
    b.add_argument("-o", "--output", required=True, help="mixture manifest to write (JSON)")
    b.set_defaults(func=_build)
    s = sub.add_parser(
        "sweep",
        help="write N mixtures drawn from a Dirichlet around the spec's proportions (RegMix)",
        description="Draw N proportion vectors from Dirichlet(concentration x prior) and write "
        "DIR/mixture-000.json ... and DIR/sweep.json, the input of `trainer ablate --sweep DIR`. "
        "Draws that break a source's epoch or token cap are redrawn.",
        epilog="example:\n  mix sweep mixture.yaml -n 16 --concentration 10 --prior natural -o out/sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("spec", help="mixture spec (YAML)")
    s.add_argument("-n", type=int, required=True, help="number of mixtures")
    s.add_argument("-o", "--output", required=True, help="folder to write the mixtures into")
    s.add_argument(
        "--concentration", type=float, default=10.0,
        help="Dirichlet concentration (sum of its parameters); larger stays closer to the prior (default 10)",
    )
    s.add_argument(
        "--prior", choices=("spec", "natural"), default="spec",
        help="centre of the draws: the spec's weighting, or proportions to token counts (default spec)",
    )
    s.add_argument("--seed", type=int, default=None, help="seed of the draws (default: the spec's seed)")
    s.set_defaults(func=_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
