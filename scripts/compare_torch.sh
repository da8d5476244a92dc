#!/usr/bin/env bash
# Times the five reference configurations (and DDIM-50 sampling) with this crate's
# `benches/train_step.rs` and with PyTorch's `../shared/bench/torch_reference.py` on this
# machine, one row per process on each side (so the peak memory is the row's), and prints a
# markdown table with the time ratio (crate / PyTorch; below 1.0 the crate is faster).
#
#   scripts/compare_torch.sh                  # every row
#   scripts/compare_torch.sh pixelcnn ddpm    # some rows
#   PYTHON=~/torchenv/bin/python THREADS=2 scripts/compare_torch.sh
#
# PyTorch: see ../shared/bench/README.md (`pip install torch numpy` in a venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$HOME/torchenv/bin/python}
REFERENCE=${TORCH_REFERENCE:-../shared/bench/torch_reference.py}
export THREADS=${THREADS:-2}
export RAYON_NUM_THREADS=$THREADS
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(dcgan vae pixelcnn ddpm cyclegan)

[ -x "$PYTHON" ] || { echo "no Python with torch at $PYTHON (set PYTHON=...)" >&2; exit 2; }
[ -f "$REFERENCE" ] || { echo "no $REFERENCE (set TORCH_REFERENCE=...)" >&2; exit 2; }
cargo bench --bench train_step --no-run -q 2>/dev/null || cargo bench --bench train_step --no-run

field() { # field NAME TEXT -> the value of the first NAME=... in TEXT
  grep -o "\b$1=[^[:space:]]*" <<<"$2" | head -n 1 | cut -d= -f2 || true
}

torch_row() {
  "$PYTHON" - "$REFERENCE" "$1" <<'PY'
import resource, runpy, sys
ref, row = sys.argv[1], sys.argv[2]
sys.argv = [ref, row]
runpy.run_path(ref, run_name="__main__")
print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
PY
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, THREADS=$THREADS"
echo
echo "| row | params (crate / torch) | crate median ms | PyTorch median ms | ratio | crate peak RSS MB | PyTorch peak RSS MB |"
echo "|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  ours=$(cargo bench -q --bench train_step -- "$row" 2>/dev/null)
  theirs=$(torch_row "$row" 2>/dev/null)
  o=$(grep "^$row " <<<"$ours" || true)
  t=$(grep "^$row " <<<"$theirs" || true)
  om=$(field median_ms "$o"); tm=$(field median_ms "$t")
  ratio=$(awk -v a="$om" -v b="$tm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "| $row | $(field params "$o") / $(field params "$t") | $om | $tm | $ratio | $(field peak_rss_mb "$o") | $(field peak_rss_mb "$theirs") |"
  if [ "$row" = ddpm ]; then
    os=$(grep "^ddpm_sample_ddim50_n16 " <<<"$ours" || true)
    ts=$(grep "^ddpm_sample_ddim50_n16 " <<<"$theirs" || true)
    ratio=$(awk -v a="$(field ms "$os")" -v b="$(field ms "$ts")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    echo "| ddpm_sample_ddim50_n16 | | $(field ms "$os") | $(field ms "$ts") | $ratio | $(field peak_rss_mb "$os") | |"
  fi
done
