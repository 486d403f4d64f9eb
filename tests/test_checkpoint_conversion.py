"""Checkpoint conversion against an independent implementation: a random tiny ``transformers``
MegatronBert, written out as Megatron-LM checkpoints (every ``checkpoint_version``, TP=1 and TP=2
shards, pickled ``args`` with a Megatron-LM object) and as a NeMo 1.x ``.nemo``, imports to masked-LM
and sentence-order logits equal to the transformers model's; ours → HF → ours is bit-identical;
malicious, broken and mismatching files are refused by name.
"""

import os

import pytest
import torch

from biomegatron_nemo.export.convert import import_checkpoint, main as convert_main
from biomegatron_nemo.export.hf import export_hf, export_nemo_hf
from biomegatron_nemo.checkpoints.safe_load import UnsafeCheckpointError, safe_torch_load

from helpers.megatron_lm_files import write_megatron_lm, write_nemo1
from helpers.models import write_tiny_vocab

TEXTS = [("cisplatin induced nephrotoxicity in rats", "the dose was increased"),
         ("insulin receptor kinase", "glucose levels in blood were decreased in mice")]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_tiny_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="module")
def hf_model(vocab):
    from transformers import MegatronBertConfig, MegatronBertForPreTraining

    size = sum(1 for line in vocab.read_text().splitlines() if line)
    torch.manual_seed(0)
    # the sizes of the "micro" preset, so the NER example can fine-tune the import as it is
    config = MegatronBertConfig(vocab_size=size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=256, max_position_embeddings=512, layer_norm_eps=1e-5,
                                hidden_act="gelu", pad_token_id=0)
    model = MegatronBertForPreTraining(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _batch(tokenizer):
    enc = [tokenizer.encode(a).ids + [tokenizer.sep_id] + tokenizer.encode(b).ids for a, b in TEXTS]
    types = [[0] * (len(tokenizer.encode(a).ids) + 1) + [1] * len(tokenizer.encode(b).ids) for a, b in TEXTS]
    width = max(len(e) for e in enc) + 3  # padding on every row
    ids = torch.tensor([[tokenizer.cls_id] + e + [0] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * (len(e) + 1) + [0] * (width - len(e)) for e in enc])
    tt = torch.tensor([[0] + t + [0] * (width - len(t)) for t in types])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


def _ours_logits(nemo_file):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    model = BioMegatronPretrainingModel.restore_from(str(nemo_file)).eval()
    batch = _batch(model.tokenizer)
    with torch.no_grad():
        out = model(**batch)  # the masked-LM logits of every position
    return model, batch, out.logits[..., : model.tokenizer.vocab_size], out.sentence_order_logits


def _assert_matches_hf(hf_model, nemo_file):
    model, batch, mlm, sop = _ours_logits(nemo_file)
    with torch.no_grad():
        out = hf_model(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mlm[real], out.prediction_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(sop, out.seq_relationship_logits, atol=1e-5, rtol=0)
    return model


@pytest.mark.parametrize("version, tp, old_names", [(0, 1, True), (1.0, 2, False), (2.0, 1, False), (3.0, 2, False)])
def test_megatron_lm_checkpoints_import_to_the_transformers_logits(hf_model, vocab, tmp_path, version, tp, old_names):
    root = write_megatron_lm(hf_model, tmp_path / "ckpt", version, tp, old_names=old_names)
    lines = import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab))
    assert f"{tp} tensor-parallel shard(s), checkpoint_version {version:g}" in lines[0]
    model = _assert_matches_hf(hf_model, tmp_path / "out.nemo")
    assert model.encoder_config.layernorm_epsilon == 1e-5  # Megatron's, from args
    assert model.cfg.tokenizer.cased is False  # BertWordPieceLowerCase


def test_a_wrong_qkv_order_would_be_caught(hf_model, vocab, tmp_path):
    """The parity check can fail: a version-1.0 file read as 3.0 gives other logits."""
    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 1.0, 1)
    path = root / "iter_0001000" / "mp_rank_00" / "model_optim_rng.pt"
    ckpt = safe_torch_load(path)
    ckpt["checkpoint_version"] = 3.0
    ckpt.pop("args")
    torch.save(ckpt, path)
    import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab), num_attention_heads=4)
    with pytest.raises(AssertionError):
        _assert_matches_hf(hf_model, tmp_path / "out.nemo")


def test_nemo1_files_import_with_task_heads_left_out_and_named(hf_model, vocab, tmp_path):
    write_nemo1(hf_model, tmp_path / "bert.nemo", vocab)
    import_checkpoint("nemo1", str(tmp_path / "bert.nemo"), str(tmp_path / "out.nemo"))
    _assert_matches_hf(hf_model, tmp_path / "out.nemo")
    head = {"classifier.mlp.layer0.weight": torch.zeros(3, 64)}
    write_nemo1(hf_model, tmp_path / "ner.nemo", vocab, prefix="bert_model.", extra=head)
    lines = import_checkpoint("nemo1", str(tmp_path / "ner.nemo"), str(tmp_path / "ner_out.nemo"))
    assert any("left out" in line and "classifier.mlp.layer0.weight" in line for line in lines)
    _assert_matches_hf(hf_model, tmp_path / "ner_out.nemo")  # the encoder and pretraining heads are the same
    lines = import_checkpoint("nemo1", str(tmp_path / "bert.nemo"), str(tmp_path / "enc.nemo"), encoder_only=True)
    assert any(line.startswith("left out (encoder only): binary_head, mlm_head") for line in lines), lines
    assert any("no masked-LM head" in line and "random" in line for line in lines)


def test_ours_to_hf_to_ours_is_bit_identical_and_transformers_loads_it_alone(hf_model, vocab, tmp_path):
    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 3.0, 1)
    first = tmp_path / "first.nemo"
    import_checkpoint("megatron-lm", str(root), str(first), vocab_file=str(vocab))
    export_nemo_hf(str(first), str(tmp_path / "hf"))
    import_checkpoint("hf", str(tmp_path / "hf"), str(tmp_path / "again.nemo"))
    from biomegatron_nemo.checkpoints.weights import read_nemo_weights

    a, b = read_nemo_weights(str(first)), read_nemo_weights(str(tmp_path / "again.nemo"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # transformers alone: model and tokenizer from the folder
    from transformers import AutoModelForPreTraining, AutoTokenizer

    exported = AutoModelForPreTraining.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert len(tokenizer) == exported.config.vocab_size == a["encoder.embedding.word_embeddings.weight"].shape[0]
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    text = "Cisplatin induced nephrotoxicity in rats."
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == WordPieceTokenizer(str(vocab)).encode(text).ids
    _assert_matches_hf(exported, first)


def test_malicious_and_broken_files_are_refused_by_name(hf_model, vocab, tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 3.0, 1)
    path = root / "iter_0001000" / "mp_rank_00" / "model_optim_rng.pt"
    good = path.read_bytes()
    torch.save({"model": {}, "args": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"model_optim_rng\.pt.*(posix|nt)\.system"):
        import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab))
    assert not marker.exists()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"model_optim_rng\.pt: not a readable PyTorch checkpoint"):
        import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab))
    # an extra tensor, a missing one, a vocabulary longer than the embeddings
    (tmp_path / "good.pt").write_bytes(good)
    ckpt = safe_torch_load(tmp_path / "good.pt")
    ckpt.pop("args")  # holds a placeholder of a Megatron-LM class, which cannot be pickled again
    ckpt["model"]["language_model"]["encoder"]["layers.0.mystery.weight"] = torch.zeros(2)
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="layers.0.mystery.weight"):
        import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab),
                          num_attention_heads=4)
    del ckpt["model"]["language_model"]["encoder"]["layers.0.mystery.weight"]
    del ckpt["model"]["lm_head"]["layernorm.bias"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="mlm_head.lm_head.layer_norm.bias"):
        import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(vocab),
                          num_attention_heads=4)
    long_vocab = tmp_path / "long.txt"
    long_vocab.write_text(vocab.read_text() + "\n".join(f"extra{i}" for i in range(200)) + "\n")
    path.write_bytes(good)
    with pytest.raises(ValueError, match="vocabulary has 382 entries but encoder.embedding.word_embeddings.weight has only 256 rows"):
        import_checkpoint("megatron-lm", str(root), str(tmp_path / "out.nemo"), vocab_file=str(long_vocab))


def test_the_command_line_prints_the_mapping_and_names_errors(hf_model, vocab, tmp_path, capsys):
    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 2.0, 2)
    out = tmp_path / "out.nemo"
    assert convert_main(["--from", "megatron-lm", "--to", "nemo", str(root), str(out), "--vocab-file", str(vocab)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint_version 2" in printed and "written:" in printed and out.is_file()
    assert convert_main(["--from", "megatron-lm", "--to", "nemo", str(tmp_path / "none"), str(out),
                         "--vocab-file", str(vocab)]) == 2
    assert "no Megatron-LM checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_main(["--from", "megatron-lm", "--to", "hf", str(root), str(out)])


def test_training_parity_with_the_exported_model_in_transformers(hf_model, vocab, tmp_path):
    """Same weights, dropout off, the same batches and AdamW settings: 20 masked-LM steps of our
    model and of the exported MegatronBertForMaskedLM agree (loss normalisation, masking contract,
    no weight decay on biases and LayerNorm weights)."""
    from omegaconf import OmegaConf
    from transformers import MegatronBertForMaskedLM

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from helpers.models import batch_loss, synthetic_mlm_batch

    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 3.0, 1)
    import_checkpoint("megatron-lm", str(root), str(tmp_path / "lm.nemo"), vocab_file=str(vocab))
    encoder = OmegaConf.to_container(BioMegatronPretrainingModel.restore_from(str(tmp_path / "lm.nemo")).cfg.encoder)
    encoder.update(hidden_dropout=0.0, attention_dropout=0.0)
    ours = BioMegatronPretrainingModel(OmegaConf.create({  # encoder and MLM head from the import
        "tokenizer": {"vocab_file": str(vocab)}, "encoder": encoder, "binary_head": False,
        "init_from": str(tmp_path / "lm.nemo"), "init_heads": True,
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}}))
    export = tmp_path / "hf"
    export_hf(ours, str(export))
    theirs = MegatronBertForMaskedLM.from_pretrained(str(export), hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0)
    ours.train(), theirs.train()
    optimizer, _ = ours.setup_optimization(ours.cfg.optim)
    decay = [p for n, p in theirs.named_parameters() if p.ndim >= 2 and not n.endswith(".bias")]
    no_decay = [p for n, p in theirs.named_parameters() if not (p.ndim >= 2 and not n.endswith(".bias"))]
    theirs_opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3,
                                   betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for step in range(20):
        batch = synthetic_mlm_batch(ours.tokenizer.vocab_size, batch_size=4, seq_len=16, seed=step % 2)
        mine = batch_loss(ours, batch)
        optimizer.zero_grad()
        mine.backward()
        optimizer.step()
        out = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], labels=batch["lm_labels"])
        theirs_opt.zero_grad()
        out.loss.backward()
        theirs_opt.step()
        losses.append((float(mine), float(out.loss)))
    assert losses[18][0] < losses[0][0] - 0.1  # it trained (the same batch, 18 steps later)
    for step, (a, b) in enumerate(losses):
        assert abs(a - b) < 1e-4, f"step {step}: ours {a:.6f} vs transformers {b:.6f}"


@pytest.mark.slow
def test_an_imported_checkpoint_fine_tunes_through_the_ner_example(hf_model, vocab, tmp_path):
    from helpers.processes import run_example

    root = write_megatron_lm(hf_model, tmp_path / "ckpt", 3.0, 2)
    lm = tmp_path / "imported.nemo"
    import_checkpoint("megatron-lm", str(root), str(lm), vocab_file=str(vocab))
    proc = run_example("token_classification", [
        f"exp_manager.exp_dir={tmp_path}", "trainer.enable_progress_bar=false", "trainer.max_steps=5",
        "model.encoder.preset=micro", "model.encoder.layernorm_epsilon=1e-5", f"model.tokenizer.vocab_file={vocab}",
        f"model.language_model.nemo_file={lm}"], cwd=tmp_path)
    assert f"nemo_file: {lm}" in proc.stdout  # the printed config: the encoder came from the import
    assert (tmp_path / "biomegatron_ner" / "run" / "checkpoints" / "biomegatron_ner.nemo").is_file()


def test_list_available_models_gives_a_conversion_command_that_parses():
    import shlex

    from biomegatron_nemo.export.convert import parse_args
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    entries = BioMegatronPretrainingModel.list_available_models()
    assert {e.pretrained_model_name for e in entries} == {"biomegatron345muncased", "biomegatron345mcased"}
    for entry in entries:
        command = entry.description.split("the vocabulary file NGC lists with it: ", 1)[1]
        args = parse_args(shlex.split(command)[3:])  # after "python -m biomegatron_nemo.export.convert"
        assert (args.source, args.target, args.input) == ("megatron-lm", "nemo", f"{entry.pretrained_model_name}/")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForPreTraining"])
def test_post_layernorm_berts_import_to_their_logits_and_export_back(vocab, tmp_path, architecture):
    """BioBERT / PubMedBERT are HF BertModels (LayerNorm after each residual add): they become
    layernorm_order=post encoders with equal logits, and export back to the same weights."""
    import transformers
    from transformers import BertConfig

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    size = sum(1 for line in vocab.read_text().splitlines() if line)
    torch.manual_seed(1)
    hf = getattr(transformers, architecture)(BertConfig(
        vocab_size=size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(str(tmp_path / "bert"))
    (tmp_path / "bert" / "vocab.txt").write_text(vocab.read_text())
    import_checkpoint("hf", str(tmp_path / "bert"), str(tmp_path / "bert.nemo"))
    model = BioMegatronPretrainingModel.restore_from(str(tmp_path / "bert.nemo")).eval()
    assert model.encoder_config.layernorm_order == "post" and model.encoder_config.layernorm_epsilon == 1e-12
    batch = _batch(model.tokenizer)
    with torch.no_grad():
        ours = model(**batch)
        mlm = ours.logits[..., :size]
        out = hf(**batch)
    logits = out.logits if architecture == "BertForMaskedLM" else out.prediction_logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mlm[real], logits[real], atol=1e-5, rtol=0)
    if architecture == "BertForPreTraining":
        torch.testing.assert_close(ours.sentence_order_logits, out.seq_relationship_logits, atol=1e-5, rtol=0)
    export_hf(model, str(tmp_path / "again"))
    again = getattr(transformers, architecture).from_pretrained(str(tmp_path / "again"))
    theirs = hf.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in again.state_dict().items() if k in theirs)
    if architecture == "BertForMaskedLM":  # the post-LN layers are tensor-parallel like the rest
        # (dropout is off in this model: the helper records the logits of a model in training mode)
        from helpers.distributed import run_distributed
        from helpers.parity import spawned_restore_logits

        # TP=1 in this process (megatron-core's one-process state, as a 1-rank launch would set it;
        # a launch costs seconds of imports), TP=2 in two spawned ranks
        spawned_restore_logits(0, 1, str(tmp_path / "bert.nemo"), 1, str(tmp_path / "tp1.pt"))
        run_distributed(spawned_restore_logits, 2, str(tmp_path / "bert.nemo"), 2, str(tmp_path / "tp2.pt"))
        tp1, tp2 = (torch.load(tmp_path / f"tp{tp}.pt", weights_only=True)["logits"] for tp in (1, 2))
        torch.testing.assert_close(tp2, tp1, atol=1e-5, rtol=0)
