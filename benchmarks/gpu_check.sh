#!/usr/bin/env bash
# The GPU path in one command, for the lent GPU machine (one H200, no network). Through the device
# tool: carry ["gpu_wheels"] (built here with `make gpu-wheels`), command `bash benchmarks/gpu_check.sh`,
# timeout_s 600. Everything it measures lands under $OUT (default ./gpu_results): results.json,
# summary.md, stages.jsonl, logs/<stage>.log, and each stage's own JSON. docs/benchmarks/gpu.md
# says what each stage checks.
#
# Stages, in order, each under its own `timeout` (cut further so the whole run stays within
# GPU_CHECK_BUDGET_S, default 540 s); a stage that fails or hangs does not stop the next one:
#   install     carried wheels -> $GPU_SITE (benchmarks/gpu_install.py, offline, --no-deps)
#   env         machine, versions, the spec `auto` resolves to; the installed wheel imports alone
#   pytest_gpu  pytest -m gpu tests/gpu (specs vs CPU float64, dropout RNG tracker, .nemo GPU -> CPU)
#   throughput  345m, seq 512, bf16: ours vs HF MegatronBertForMaskedLM, recompute off/on, MFU, memory
#   ner         examples/token_classification.py on the shipped samples, trainer.precision=bf16-mixed
#   pretrain    preprocess the shipped PubMed sample, then examples/pretrain.py with bf16-mixed
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/gpu_results}"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
PY="${GPU_PYTHON:-/opt/torch/.venv/bin/python3}"
[ -x "$PY" ] || PY="$(command -v python3)"
SITE="${GPU_SITE:-${TMPDIR:-/tmp}/biomegatron_gpu_site}"
# Checkpoints and .nemo files stay here, fresh each run (pretraining would resume an old run).
WORK="${GPU_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/biomegatron_gpu_work.XXXXXX")}"
WHEELS="${GPU_WHEELS:-$REPO/gpu_wheels}"
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
RESERVE=15                                                    # seconds kept for the final report
START=$(date +%s)
STAGES="$OUT/stages.jsonl"
# Only this run's results in $OUT (the device tool hands an empty one; a local rerun may not be).
rm -rf "$OUT/ner" "$OUT/pretrain" "$OUT"/logs/*.log
rm -f "$OUT"/{results.json,summary.md,env.json,install.json,pytest_gpu.xml,throughput.json,throughput.md}
: > "$STAGES"
mkdir -p "$WORK" "$OUT/ner" "$OUT/pretrain"

# GPU_CHECK_DRY_RUN=1: the same stages on a CPU machine, small and in fp32 (CPU autocast breaks
# megatron-core's linears), to test this script's plumbing without a GPU. Never a GPU result.
PRECISION=bf16-mixed
THROUGHPUT_ARGS=(--preset 345m --seq-len 512 --device cuda --precision bf16 --recompute both --time-budget 180)
NER_ARGS=()
PRETRAIN_STEPS=300
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    PRECISION=32
    THROUGHPUT_ARGS=(--preset micro --seq-len 64 --device cpu --steps 2 --recompute both)
    NER_ARGS=(trainer.max_epochs=2)
    PRETRAIN_STEPS=20
    echo "== GPU_CHECK_DRY_RUN=1: CPU plumbing test, small sizes, fp32 (not a GPU result)"
fi

export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled

report() { "$PY" "$REPO/benchmarks/gpu_report.py" --out "$OUT" > /dev/null 2>&1 || true; }

# run_stage NAME LIMIT_S COMMAND...: run with a timeout, log to $OUT/logs/NAME.log, record a line.
run_stage() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped, time budget spent"
        printf '{"stage": "%s", "skipped": true, "limit_s": 0}\n' "$name" >> "$STAGES"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s elapsed)"
    local t0 t1 rc ms
    t0=$(date +%s%N)
    timeout -k 10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    local timed_out=false
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && timed_out=true
    printf '{"stage": "%s", "rc": %d, "seconds": %d.%03d, "limit_s": %d, "timed_out": %s}\n' \
        "$name" "$rc" $(( ms / 1000 )) $(( ms % 1000 )) "$limit" "$timed_out" >> "$STAGES"
    echo "   rc=$rc; last lines of logs/$name.log:"
    tail -n 4 "$OUT/logs/$name.log" | sed 's/^/   | /'
    report
}

run_stage install 90 "$PY" benchmarks/gpu_install.py --wheels "$WHEELS" --target "$SITE" --report "$OUT/install.json"
# The working tree first (what is being checked), then the installed wheels, then the machine's own.
export PYTHONPATH="$REPO:$SITE"

run_stage env 60 "$PY" benchmarks/gpu_report.py --out "$OUT" --env --site "$SITE"

run_stage pytest_gpu 150 "$PY" -m pytest -m gpu tests/gpu -v -rs -p no:cacheprovider \
    --junitxml="$OUT/pytest_gpu.xml"

run_stage throughput 220 "$PY" benchmarks/gpu_throughput.py "${THROUGHPUT_ARGS[@]}" --output "$OUT/throughput.json"

# NER: the example as shipped (tiny encoder, 30 epochs on the sample, vocabulary learned from it),
# only the precision changed; max_time guards the budget.
run_stage ner 120 "$PY" examples/token_classification.py trainer.precision=$PRECISION \
    trainer.enable_progress_bar=false trainer.max_time=00:00:01:30 exp_manager.exp_dir="$WORK/ner" "${NER_ARGS[@]}"
cp "$WORK"/ner/biomegatron_ner/run/events.out.tfevents.* "$WORK"/ner/biomegatron_ner/run/test_predictions.conll \
    "$WORK"/ner/biomegatron_ner/run/hparams.yaml "$OUT/ner/" 2> /dev/null

run_stage pretrain_data 40 "$PY" -m biomegatron_nemo.data.preprocess \
    --input biomegatron_nemo/samples/pubmed_sample.txt --output-prefix "$WORK/pretrain_data/pubmed" \
    --vocab-file tests/fixtures/pretraining/sample_vocab.txt --no-progress --summary-json "$OUT/pretrain/preprocess.json"
run_stage pretrain 100 "$PY" examples/pretrain.py "model.data.data_prefix=[$WORK/pretrain_data/pubmed]" \
    model.tokenizer.vocab_file="$REPO/tests/fixtures/pretraining/sample_vocab.txt" \
    model.data.path_to_cache="$WORK/pretrain_data/cache" trainer.precision=$PRECISION \
    trainer.max_steps=$PRETRAIN_STEPS trainer.val_check_interval=$(( PRETRAIN_STEPS / 3 )) trainer.limit_val_batches=5 trainer.log_every_n_steps=10 \
    trainer.enable_progress_bar=false exp_manager.exp_dir="$WORK/pretrain"
cp "$WORK"/pretrain/biomegatron_pretrain/run/events.out.tfevents.* "$WORK"/pretrain/biomegatron_pretrain/run/hparams.yaml \
    "$OUT/pretrain/" 2> /dev/null

"$PY" benchmarks/gpu_report.py --out "$OUT" || true
echo "== done in $(( $(date +%s) - START ))s; summary: $OUT/summary.md"
cat "$OUT/summary.md" 2> /dev/null
