#!/usr/bin/env bash
# One short device check: the bench suites on a CUDA GPU.
#  - kv / batching / prefix on a ~300M-parameter Llama built from a config (random weights,
#    the demo tokenizer): speed figures only, no quality claims;
#  - spec on the bundled demo pair.
# bitsandbytes is not on the lent GPU image, so the quant suite is not run there.
# Usage (repo root): OUT=dir tools/gpu_bench.sh   [GPU_BENCH_SMALL=1 for a CPU dry run]
set -euo pipefail
OUT=${OUT:-bench-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
BIG=${BIG:-/tmp/workbench-llama-300m}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true
$PY - "$BIG" <<'PYEOF'
import os, sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
out = sys.argv[1]
tok = AutoTokenizer.from_pretrained("assets/models/target")
small = os.environ.get("GPU_BENCH_SMALL") == "1"
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256 if small else 1024, intermediate_size=704 if small else 2816,
                  num_hidden_layers=2 if small else 24, num_attention_heads=4 if small else 16,
                  num_key_value_heads=4 if small else 16, max_position_embeddings=2048,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
print("params", sum(p.numel() for p in model.parameters()), flush=True)
model.save_pretrained(out)
tok.save_pretrained(out)
PYEOF
for suite in kv batching prefix; do
  $PY -m app bench --model "$BIG" --suite $suite --quick --json "$OUT/$suite.json" 2>&1 | grep -v "Loading weights\|Writing model" | tee -a "$OUT/log.txt"
done
$PY -m app bench --suite spec --quick --json "$OUT/spec.json" 2>&1 | grep -v "Loading weights\|Writing model" | tee -a "$OUT/log.txt"
