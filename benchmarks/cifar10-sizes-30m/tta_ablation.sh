#!/bin/bash
# Paired TTA ablation: the same saved models, the same 5,000 test images, predicted in fp32 under each train.tta.
out=/tmp/tta_ablation.jsonl; : > $out
for d in runs/cnn/final/0 runs/cnn/final/1 runs/cnn/final/2 /tmp/sv30/runs/anchor/final/0 /tmp/sv30/runs/anchor/final/1 /tmp/sv30/runs/anchor/final/2; do
  for t in none flip flip_shift; do
    acc=$(/work/main/.venv/bin/tune-eval $d --set train.tta=$t | python3 -c "import json,sys; print(json.load(sys.stdin)['accuracy'])")
    echo "{\"model\": \"$d\", \"tta\": \"$t\", \"accuracy\": $acc}" >> $out
  done
done
