#!/usr/bin/env bash
# The main job on the bundled sample crawl (a few minutes on 2 CPU cores):
#   1. beam run recipes/cc_en.py with every filter and dedup on, training a BPE tokenizer;
#   2. the same crawl with filters and dedup off, tokenized with that same tokenizer;
#   3. mix build: one mixture per variant at an equal token budget;
#   4. trainer ablate: a proxy model per mixture and seed, evaluated on the same held-out sets
#      (including clean held-out documents), ending with a ranked report.
# Run after install.sh. OUT (default out/) holds everything.
set -euo pipefail
cd "$(dirname "$0")"
BIN=.venv/bin
OUT=${OUT:-out}
SMALL=(-p seq_len=256 -p validation_fraction=0.05)   # the sample is a few MB: short sequences, a larger held-out split

"$BIN/beam" run recipes/cc_en.py --output "$OUT/cc_en" "${SMALL[@]}" -p vocab_size=4096
"$BIN/beam" run recipes/cc_en.py --output "$OUT/cc_en_raw" "${SMALL[@]}" -p filter_mode=off -p dedup=false \
    -p tokenizer="$OUT/cc_en/tokens/tokenizer.json"

mkdir -p "$OUT/mixtures"
for v in cc_en cc_en_raw; do
  cat > "$OUT/mixtures/$v.yaml" <<YAML
sources: [{name: $v, manifest: ../$v/tokens, domain: web}]
budget_tokens: 200K
seed: 0
weighting: {method: explicit, proportions: {$v: 1.0}}
YAML
  "$BIN/mix" build "$OUT/mixtures/$v.yaml" -o "$OUT/mixtures/$v.json"
done

# 'clean' = the held-out documents that pass every filter; neither model trained on them.
# The mixtures were just rebuilt, so the ablation starts afresh (an ablation folder refuses runs of a mixture
# made from another version of its manifest, rather than reusing them).
rm -rf "$OUT/ablation"
"$BIN/trainer" ablate "$OUT/mixtures/cc_en.json" "$OUT/mixtures/cc_en_raw.json" --eval clean="$OUT/cc_en/tokens" \
    --rank-by clean --tokens 200K --lr 3e-3 --seeds 2 --eval-max-sequences 64 -o "$OUT/ablation"
