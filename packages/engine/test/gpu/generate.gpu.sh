#!/usr/bin/env bash
# `x generate --device cuda` (the CLI bundled by bundle.mjs, dist-gpu/cli.mjs) on fixtures of each
# architecture: fp16 greedy gives transformers' fp32 greedy continuation (first 16 tokens), bf16
# runs, and a seeded sampled run repeats exactly.
#   source .device/activate.sh && bash packages/engine/test/gpu/generate.gpu.sh
set -uo pipefail
fx=packages/engine/fixtures
status=0
gen() { timeout 120 node packages/engine/dist-gpu/cli.mjs generate --device "${X_TEST_DEVICE:-cuda}" "$@" --json; }
for m in llama-v4 mistral-v5 qwen2-v5 qwen3-v4; do
  ids=$(node -e "console.log(require('./$fx/$m/expected.json').prompt_ids.join(','))")
  want=$(node -e "console.log(JSON.stringify(require('./$fx/$m/expected.json').greedy_ids.slice(0,16)))")
  got=$(gen --model "$fx/$m" --dtype f16 --prompt-ids "$ids" --max-tokens 16 --temperature 0 --ignore-eos \
    | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const r=JSON.parse(s);console.log(JSON.stringify(r.token_ids));console.error('  decode '+r.decode_tokens_per_s+' tok/s')})")
  if [ "$got" = "$want" ]; then echo "ok $m f16 greedy = transformers fp32"; else echo "not ok $m f16 greedy: $got, want $want"; status=1; fi
  a=$(gen --model "$fx/$m" --dtype bf16 --prompt "Once upon a time" --max-tokens 12 --seed 7 --temperature 0.8 | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.stringify(JSON.parse(s).token_ids)))")
  b=$(gen --model "$fx/$m" --dtype bf16 --prompt "Once upon a time" --max-tokens 12 --seed 7 --temperature 0.8 | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.stringify(JSON.parse(s).token_ids)))")
  if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "ok $m bf16 seeded sampling repeats: $a"; else echo "not ok $m bf16 seeded: '$a' vs '$b'"; status=1; fi
done
exit $status
