"""Starting from a pretrained checkpoint by naming it (``language_model.pretrained``): its kind is read
from its files, it decides the encoder's architecture and the vocabulary, its conversion is cached,
and a key that disagrees with it is refused in one line.

On real weights (sentence-transformers/all-MiniLM-L6-v2, a post-LayerNorm ``BertModel`` whose
vocabulary lives in ``tokenizer.json`` only) the encoder's hidden states equal ``transformers``'
on real sentences; on a random ``MegatronBert`` of sizes no preset has, each of the four kinds
(Hugging Face folder, Megatron-LM folder, NeMo 1.x and this library's ``.nemo``) gives the same
encoder as ``transformers``.
"""

import json
import re
import sys

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.checkpoints import pretrained as pretrained_module
from biomegatron_nemo.checkpoints.pretrained import detect_kind, resolve_pretrained
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.models.config import BioMegatronModelConfig

from helpers.docs import blocks_run_by, run_block
from helpers.megatron_lm_files import write_megatron_lm, write_nemo1

SENTENCES = [
    "Cisplatin-induced nephrotoxicity was attenuated by pretreatment with N-acetylcysteine in rats.",
    "Hypertension is a risk factor.",
    "Patients receiving warfarin developed intracerebral hemorrhage after 3 weeks of combined therapy "
    "with aspirin (81 mg/day), which increased the international normalized ratio.",
    "Tamoxifen binds the estrogen receptor.",
]
NER_LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]


def _ner(pretrained, **extra):
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    return TokenClassificationModel(OmegaConf.create({"language_model": {"pretrained": str(pretrained)},
                                                      "label_map": NER_LABELS, **extra}))


def _hf_batch(folder):
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    assert len(tokenizer) > 100  # (a vocab_file= tokenizer would silently hold five tokens)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def _assert_same_hidden_states(model, hf_model, batch, atol):
    real = batch["attention_mask"].bool()
    for row, text in enumerate(SENTENCES):  # our tokenizer reads the checkpoint's vocabulary alike
        ours = [model.tokenizer.cls_id] + model.tokenizer.encode(text).ids + [model.tokenizer.sep_id]
        assert batch["input_ids"][row][real[row]].tolist() == ours
    with torch.no_grad():
        ours = model.eval().encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theirs = hf_model.eval()(**batch).last_hidden_state
    torch.testing.assert_close(ours[real], theirs[real], atol=atol, rtol=0)


def test_minilm_named_by_its_folder_gives_the_hidden_states_of_transformers(minilm, megatron_single):
    from transformers import BertModel

    model = _ner(minilm)
    enc = model.encoder_config
    assert (enc.num_layers, enc.hidden_size, enc.num_attention_heads, enc.ffn_hidden_size) == (6, 384, 12, 1536)
    assert (enc.layernorm_order, enc.layernorm_epsilon, model.tokenizer.vocab_size) == ("post", 1e-12, 30522)
    assert model.cfg.tokenizer.cased is False  # tokenizer_config.json: do_lower_case
    hf = BertModel.from_pretrained(str(minilm), add_pooling_layer=False)
    _assert_same_hidden_states(model, hf, _hf_batch(minilm), atol=1e-4)


def test_a_second_resolution_reads_the_cache_and_converts_nothing(minilm, monkeypatch):
    first = resolve_pretrained(minilm)
    monkeypatch.setattr(pretrained_module, "_MEMO", {})  # a new process

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained_module, "convert_checkpoint", no_conversion)
    again = resolve_pretrained(minilm)
    assert again == first and again.weights_file.startswith(str(pretrained_module.cache_root()))
    assert sum(1 for _ in (pretrained_module.cache_root() / "pretrained").glob("hf-*")) == 1


@pytest.mark.slow
def test_the_documented_start_from_a_folder_prints_only_results_and_serves_in_transformers(tmp_path):
    """docs/pretrained.md's block, as written: `biomegatron finetune ner` names only the MiniLM
    folder; `predict`, `export-hf` and transformers' pipeline each print their result and nothing
    else, and the pipeline finds what `predict` found, with the same scores."""
    (block,) = blocks_run_by("tests/test_pretrained_start.py")
    done = run_block(block, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for noise in ("OneLogger", "exporters", "[NeMo", "GPU available", "model config", "setup_training_data"):
        assert noise not in done.stdout + done.stderr, noise
    lines = done.stdout.splitlines()
    assert lines[0].startswith("test set ") and "logs and checkpoints: nemo_experiments/minilm_ner/run" in lines
    sentence = lines.index("Cisplatin induced nephrotoxicity in rats.")
    predicted = [re.fullmatch(r"  (\w+) +'(.*?)' +\[(\d+):(\d+)\]  ([0-9.]+)", line) for line in lines[sentence + 1:-3]]
    assert predicted and all(predicted), lines[sentence + 1:-3]
    assert lines[-3].startswith("written: minilm_ner_hf (BertForTokenClassification, ")
    assert lines[-2].startswith("checked: transformers' outputs equal this model's within ")
    served = re.findall(r"'entity_group': '(\w+)', 'score': np.float32\(([0-9.e-]+)\), 'word': '[^']*', "
                        r"'start': (\d+), 'end': (\d+)", lines[-1])
    assert [(m[1], int(m[3]), int(m[4])) for m in predicted] == [(g, int(a), int(b)) for g, _, a, b in served]
    assert [float(m[5]) for m in predicted] == pytest.approx([float(score) for _, score, _, _ in served], abs=6e-4)
    names = [p.name for p in (tmp_path / "nemo_experiments" / "minilm_ner" / "run" / "checkpoints").iterdir()]
    assert any(re.fullmatch(r"minilm_ner--epoch=\d+-step=30-last\.ckpt", n) for n in names), names


@pytest.fixture(scope="module")
def odd_megatron_bert(tiny_vocab):
    """A random transformers MegatronBert of sizes no preset has (3 layers, hidden 48, 3 heads,
    FFN 80, 200 positions), with non-trivial LayerNorms and biases."""
    from transformers import MegatronBertConfig, MegatronBertForPreTraining

    size = sum(1 for line in tiny_vocab.read_text().splitlines() if line)
    torch.manual_seed(3)
    model = MegatronBertForPreTraining(MegatronBertConfig(
        vocab_size=size, hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=200, layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("kind", ["hf", "megatron-lm", "nemo1", "nemo"])
def test_every_kind_of_checkpoint_decides_the_encoder(kind, odd_megatron_bert, tiny_vocab, tmp_path, megatron_single):
    from biomegatron_nemo.export.convert import import_checkpoint

    hf_folder = tmp_path / "hf"
    odd_megatron_bert.save_pretrained(str(hf_folder))
    (hf_folder / "vocab.txt").write_text(tiny_vocab.read_text())
    (hf_folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    if kind == "hf":
        path = hf_folder
    elif kind == "megatron-lm":
        path = write_megatron_lm(odd_megatron_bert, tmp_path / "megatron", 3.0, 1)
        (path / "vocab.txt").write_text(tiny_vocab.read_text())  # NGC ships it beside the checkpoint
    elif kind == "nemo1":
        path = write_nemo1(odd_megatron_bert, tmp_path / "bert.nemo", tiny_vocab)
    else:
        path = tmp_path / "ours.nemo"
        import_checkpoint("hf", str(hf_folder), str(path))
    assert detect_kind(path) == kind
    model = _ner(path)
    enc = model.encoder_config
    assert (enc.num_layers, enc.hidden_size, enc.num_attention_heads, enc.ffn_hidden_size,
            enc.max_position_embeddings, enc.layernorm_order) == (3, 48, 3, 80, 200, "pre")
    _assert_same_hidden_states(model, odd_megatron_bert.bert, _hf_batch(hf_folder), atol=1e-5)


def test_an_encoder_only_bert_of_odd_sizes_fine_tunes_re_and_qa_with_no_other_model_key(tiny_vocab, tmp_path,
                                                                                       megatron_single):
    from transformers import BertConfig, BertModel

    from biomegatron_nemo.runs.schemas import compose_run_config
    from biomegatron_nemo.runs.registry import run_task

    size = sum(1 for line in tiny_vocab.read_text().splitlines() if line)
    torch.manual_seed(5)
    BertModel(BertConfig(vocab_size=size, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                         intermediate_size=72)).save_pretrained(str(tmp_path / "bert"))
    (tmp_path / "bert" / "vocab.txt").write_text(tiny_vocab.read_text())
    for task in ("re", "qa"):
        cfg = compose_run_config({"re": "sequence_classification", "qa": "question_answering"}[task], [
            f"model.language_model.pretrained={tmp_path / 'bert'}", "trainer.max_steps=2", "do_testing=false",
            f"exp_manager.exp_dir={tmp_path / task}", "trainer.enable_progress_bar=false"])
        run_task(task, cfg)
        from biomegatron_nemo.models.base import BioMegatronModelPT

        saved = next((tmp_path / task).rglob("*.nemo"))
        enc = BioMegatronModelPT.restore_from(str(saved)).encoder_config
        assert (enc.num_layers, enc.hidden_size, enc.num_attention_heads, enc.ffn_hidden_size,
                enc.layernorm_order, enc.layernorm_epsilon) == (2, 40, 5, 72, "post", 1e-12)


def test_keys_that_disagree_with_the_checkpoint_are_refused_in_one_line(minilm, tmp_path, megatron_single):
    from biomegatron_nemo.models.from_pretrained import apply_pretrained

    def refused(match, **keys):
        with pytest.raises(ConfigError, match=match) as caught:
            _ner(minilm, **keys)
        assert "\n" not in str(caught.value)

    refused(r"encoder\.num_layers: 4 disagrees with the pretrained checkpoint .*, which has 6",
            encoder={"num_layers": 4})
    refused(r"encoder\.layernorm_order: 'pre' disagrees .* which has 'post'", encoder={"layernorm_order": "pre"})
    refused(r"encoder\.preset: 'tiny' \(num_layers=4, hidden_size=256, num_attention_heads=4, ffn_hidden_size=1024\)"
            r" disagrees", encoder={"preset": "tiny"})
    refused(r"tokenizer\.cased: True disagrees", tokenizer={"cased": True})
    other = tmp_path / "vocab.txt"
    other.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nother\n")
    refused(r"tokenizer\.vocab_file: .*vocab\.txt is not the vocabulary of the pretrained checkpoint",
            tokenizer={"vocab_file": str(other)})
    # keys that agree, and the user's own choices, pass
    agreeing = OmegaConf.create({"language_model": {"pretrained": str(minilm)}, "tokenizer": {"cased": False},
                                 "encoder": {"num_layers": 6, "layernorm_epsilon": 1e-12, "hidden_dropout": 0.2}})
    cfg = apply_pretrained(OmegaConf.merge(OmegaConf.structured(BioMegatronModelConfig), agreeing))
    assert (cfg.encoder.hidden_size, cfg.encoder.hidden_dropout) == (384, 0.2)


def test_broken_checkpoints_are_named_in_one_line(minilm, odd_megatron_bert, tiny_vocab, tmp_path):
    def refused(path, match):
        with pytest.raises((ValueError, FileNotFoundError), match=match) as caught:
            resolve_pretrained(path)
        assert "\n" not in str(caught.value), str(caught.value)

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    refused(tmp_path / "empty", r"empty: a folder that is no checkpoint this library reads; expected a \.nemo")
    refused(tmp_path / "missing", r"missing: no such file or folder")
    hf = tmp_path / "hf"
    odd_megatron_bert.save_pretrained(str(hf), max_shard_size="20KB")  # sharded safetensors
    assert (hf / "model.safetensors.index.json").is_file()
    refused(hf, r"hf: no vocab\.txt and no tokenizer\.json: the model's vocabulary is missing")
    (hf / "vocab.txt").write_text(tiny_vocab.read_text())
    shard = sorted(hf.glob("model-*.safetensors"))[-1]
    shard.rename(tmp_path / shard.name)
    refused(hf, rf"model\.safetensors\.index\.json names \d+ shard\(s\); missing: {shard.name}")
    (tmp_path / shard.name).rename(shard)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    refused(hf, r"config\.json: intermediate_size / hidden_size say \(96, 48\) but the weights hold \(80, 48\)")
    (hf / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    refused(hf, r"config\.json: num_hidden_layers is 4 but the weights have no layer 3")
    (hf / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    refused(hf, r"config\.json: model_type 'roberta'")
    refused(minilm / "model.safetensors", r"not a checkpoint this library reads")


def test_the_convert_command_takes_an_encoder_only_bert_and_names_the_random_head(minilm, tmp_path, capsys):
    from biomegatron_nemo.export.convert import main as convert_main

    assert convert_main(["--from", "hf", "--to", "nemo", str(minilm), str(tmp_path / "minilm.nemo")]) == 0
    printed = capsys.readouterr().out
    assert "the source has no masked-LM head: its 5 tensors start from random weights" in printed
    assert "from tokenizer.json" in printed and "left out: the pooler" in printed
    assert detect_kind(tmp_path / "minilm.nemo") == "nemo"


def test_benchmark_refuses_a_missing_file_before_training_anything(minilm, tmp_path, capsys):
    from biomegatron_nemo.runs.benchmark import SUITE
    from biomegatron_nemo.cli import main

    data = tmp_path / "data"
    for bench in SUITE[:2]:  # the first two tasks' files exist, the third task's train file does not
        for name in (bench.train, bench.dev):
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_text("x\tO\n")
    out = tmp_path / "bench"
    assert main(["benchmark", str(minilm), "--data", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("biomegatron benchmark: error: ") and "\n" not in err
    assert f"{data / SUITE[2].train}: the {SUITE[2].name} train file is missing" in err
    assert not out.exists()  # nothing ran, nothing was written


def test_a_classifier_reading_a_tanh_pooler_starts_from_the_checkpoints_pooler(tiny_vocab, tmp_path, megatron_single):
    """As transformers' BertForSequenceClassification does; the encoder-only convert leaves it out."""
    from transformers import BertConfig, BertModel

    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel

    size = sum(1 for line in tiny_vocab.read_text().splitlines() if line)
    torch.manual_seed(7)
    bert = BertModel(BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))
    bert.save_pretrained(str(tmp_path / "bert"))
    (tmp_path / "bert" / "vocab.txt").write_text(tiny_vocab.read_text())
    common = {"language_model": {"pretrained": str(tmp_path / "bert")}, "label_map": ["CPR:3", "false"]}
    model = SequenceClassificationModel(OmegaConf.create({**common, "pooling": "pooler"}))
    assert torch.equal(model.classifier.pooler.weight, bert.pooler.dense.weight)
    assert torch.equal(model.classifier.pooler.bias, bert.pooler.dense.bias)
    assert SequenceClassificationModel(OmegaConf.create(common)).classifier.pooler is None  # pooling: cls
