"""QuestionAnsweringModel: overfitting 16 questions (v1.1, and v2.0 with unanswerable ones; one
answer only in the second window of a long context), the .nemo round trip in a fresh process,
TP=2 = TP=1 on start/end logits, initialising from a SQuAD model with its span head (the paper's
two stages), evaluate's files against the command-line scorer, and bad inputs.

A micro encoder (2 layers, hidden 64) on a WordPiece vocabulary learned from the SAMPLE snippets.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import ConfigError, DataFormatError
from biomegatron_nemo.data.squad import QAExample, read_squad
from biomegatron_nemo.analysis.evaluate import main as evaluate_main
from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
from biomegatron_nemo.tokenizers.train import train_wordpiece

from _data_paths import SAMPLES
from helpers.processes import fresh_process_result, run_example
from helpers.qa import FILLER, LONG_QUESTION, long_context_paragraph, overfit_file

IMATINIB = ("Imatinib is a targeted therapy that inhibits BCR-ABL. It was approved for the treatment of "
            "chronic myeloid leukemia after phase III trials showed improved survival.")
ITEMS = [("What is the molecular target of Imatinib?", IMATINIB),
         ("Which disease is treated with Imatinib?", IMATINIB),
         (LONG_QUESTION, long_context_paragraph()["context"])]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    examples = read_squad(SAMPLES / "qa" / "train.json")
    texts = list(dict.fromkeys(ex.context for ex in examples)) + [ex.question for ex in examples] + [FILLER]
    (d / "text.txt").write_text("\n".join(texts) + "\n")
    train_wordpiece([str(d / "text.txt")], str(d), vocab_size=600, soft_limit=True, progress=False)
    overfit_file(d / "overfit.json")
    overfit_file(d / "overfit_v2.json", version_2=True)
    return d


def qa_config(workdir, train_file, **overrides):
    cfg = {
        "tokenizer": {"library": "wordpiece", "vocab_file": str(workdir / "vocab.txt")},
        "encoder": {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"},
        "head": {"dropout": 0.0},
        "doc_stride": 32,
        "train_ds": {"file": str(train_file), "max_seq_length": 64, "batch_size": 8},
        "optim": {"lr": 3e-3, "weight_decay": 0.0, "sched": {"warmup_ratio": 0.05}},
    }
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def fit(cfg, steps):
    from biomegatron_nemo.parallel.trainer import build_trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a micro model: more threads only fight on a shared 2-core machine
    try:
        trainer = build_trainer({"max_steps": steps, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                                 "enable_model_summary": False})
        model = QuestionAnsweringModel(cfg, trainer=trainer)
        trainer.fit(model)
    finally:
        torch.set_num_threads(threads)
    return model


@pytest.fixture(scope="module")
def trained(workdir):
    return fit(qa_config(workdir, workdir / "overfit.json"), 150)


def test_overfits_16_questions_including_one_answered_only_in_a_second_window(trained, workdir):
    file = workdir / "overfit.json"
    dataset = trained.make_dataset(read_squad(file), 64)
    long_index = next(i for i, ex in enumerate(dataset.examples) if ex.id == "long_000")
    windows = [f for f in dataset.features if f.example_index == long_index]
    labelled = [k for k, f in enumerate(windows) if f.start_position > 0]
    assert len(windows) >= 3 and labelled and 0 not in labelled  # the first window lacks the answer
    scores = trained.evaluate(str(file))
    assert scores["total"] == 16 and scores["exact_match"] == 100.0 and scores["f1"] == 100.0


def test_v2_overfits_answerable_and_unanswerable_questions(workdir):
    model = fit(qa_config(workdir, workdir / "overfit_v2.json", version_2_with_negative=True), 200)
    scores = model.evaluate(str(workdir / "overfit_v2.json"), output_dir=str(workdir / "v2_out"))
    assert scores["HasAns_total"] == 12 and scores["NoAns_total"] == 4
    assert scores["exact"] == 100.0 and scores["f1"] == 100.0
    odds = json.loads((workdir / "v2_out" / "null_odds.json").read_text())
    assert all(odds[f"impossible_{k}"] > 0 for k in range(4))  # null score beats the best span
    assert scores["best_f1"] == 100.0


def test_answers_are_ranked_exact_substrings_with_offsets(trained):
    answers = trained.answer(*ITEMS[0], top_k=3)
    assert answers[0]["text"] == "BCR-ABL" and len(answers) == 3
    assert all(IMATINIB[a["start"]:a["end"]] == a["text"] for a in answers)
    assert answers[0]["probability"] >= answers[1]["probability"] >= answers[2]["probability"]
    long_answer = trained.predict([ITEMS[2]])[0][0]
    assert long_answer["text"] == "FBN1" and long_answer["end"] == len(ITEMS[2][1])  # at the very end


@pytest.mark.slow
def test_nemo_round_trip_in_a_fresh_process(trained, tmp_path):
    path = tmp_path / "qa.nemo"
    trained.save_to(str(path))
    before = trained.predict(ITEMS)
    code = ("import json, sys\n"
            "from biomegatron_nemo.models.question_answering import QuestionAnsweringModel\n"
            "m = QuestionAnsweringModel.restore_from(sys.argv[1])\n"
            "print('RESULT=' + json.dumps(m.predict([tuple(x) for x in json.loads(sys.argv[2])])))\n")
    assert fresh_process_result(code, path, json.dumps(ITEMS), cwd=tmp_path) == before


@pytest.mark.slow
def test_tensor_parallel_logits_equal_and_the_span_head_initialises_from_a_squad_model(trained, workdir, tmp_path):
    """BioASQ after SQuAD: init_from a QA .nemo with init_heads gives the SQuAD model's logits, at
    TP=1 and at TP=2; without init_heads only the encoder is taken."""
    from helpers.distributed import run_distributed
    from helpers.qa import spawned_span_logits

    squad = tmp_path / "squad.nemo"
    trained.save_to(str(squad))
    cfg = qa_config(workdir, workdir / "overfit.json", dataset="bioasq", init_from=str(squad), init_heads=True)
    second = QuestionAnsweringModel(cfg)
    batch = _batch(second, ITEMS)
    second.eval(), trained.eval()
    with torch.no_grad():
        want = trained(**trained.forward_inputs(batch))
        want = (want.start_logits, want.end_logits)
        got = second(**second.forward_inputs(batch))
        got = (got.start_logits, got.end_logits)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    encoder_only = QuestionAnsweringModel(qa_config(workdir, workdir / "overfit.json", init_from=str(squad)))
    rows = trained.tokenizer.vocab_size  # past them: padding rows, not part of the weights
    assert torch.equal(encoder_only.encoder.embedding.word_embeddings.weight[:rows],
                       trained.encoder.embedding.word_embeddings.weight[:rows])
    assert not torch.equal(encoder_only.span_head.mlp[-1].weight, trained.span_head.mlp[-1].weight)
    config_file = tmp_path / "qa.yaml"
    OmegaConf.save(cfg, config_file)
    run_distributed(spawned_span_logits, 2, str(config_file), ITEMS, str(tmp_path / "tp2.pt"))
    tp2 = torch.load(tmp_path / "tp2.pt", weights_only=True)
    torch.testing.assert_close((tp2["start"], tp2["end"]), want, atol=1e-5, rtol=0)


def test_init_heads_needs_a_checkpoint_with_the_same_heads(workdir, tmp_path):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    with pytest.raises(ConfigError, match="init_heads"):
        QuestionAnsweringModel(qa_config(workdir, workdir / "overfit.json", init_heads=True))
    lm = tmp_path / "lm.nemo"
    BioMegatronPretrainingModel(OmegaConf.create({"tokenizer": {"vocab_file": str(workdir / "vocab.txt")},
                                                  "encoder": {"preset": "micro"}})).save_to(str(lm))
    with pytest.raises(ValueError, match=r"cannot initialise from .*lm\.nemo: span_head\..* is missing from the checkpoint"):
        QuestionAnsweringModel(qa_config(workdir, workdir / "overfit.json", init_from=str(lm), init_heads=True))


def _batch(model, items):
    ds = model.make_dataset([QAExample(str(i), q, c) for i, (q, c) in enumerate(items)])
    return ds.collate_fn([ds[i] for i in range(len(ds))])


def test_bioasq_evaluate_writes_official_files_equal_to_the_command_line_scorer(trained, tmp_path, capsys):
    trained.cfg.dataset = "bioasq"
    try:
        dev = SAMPLES / "qa" / "dev.json"
        scores = trained.evaluate(str(dev), output_dir=str(tmp_path))
    finally:
        trained.cfg.dataset = "squad"
    assert scores["questions"] == 10 and set(scores) >= {"strict_accuracy", "lenient_accuracy", "mrr"}
    assert evaluate_main(["bioasq", "--gold", str(dev), "--pred", str(tmp_path / "nbest_predictions.json"),
                          "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert {k: cli[k] for k in ("strict_accuracy", "lenient_accuracy", "mrr")} == \
        {k: scores[k] for k in ("strict_accuracy", "lenient_accuracy", "mrr")}
    submission = json.loads((tmp_path / "bioasq_submission.json").read_text())["questions"]
    assert len(submission) == 10 and all(1 <= len(q["exact_answer"]) <= 5 for q in submission)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert len(predictions) == 20 and all(isinstance(v, str) for v in predictions.values())


def test_bad_inputs_are_handled_or_named(trained, workdir, tmp_path):
    # empty question / empty context: answered (or "no span"), never an exception
    assert trained.answer("", IMATINIB)[0]["text"] in IMATINIB
    assert trained.answer("What is the target?", "") == [{"text": "", "start": None, "end": None,
                                                          "probability": 1.0}]
    # a context far longer than max_seq_length: windows over all of it, answers from its end too
    long_context = FILLER * 12 + "The gene sequenced in every patient was FBN1"
    windows = trained.make_dataset([QAExample("long", LONG_QUESTION, long_context)]).features
    assert len(windows) > 10 and windows[-1].offsets[-2][1] == len(long_context)
    answers = trained.answer(LONG_QUESTION, long_context, top_k=20)
    assert all(long_context[a["start"]:a["end"]] == a["text"] for a in answers)
    for bad, error, fragment in ((None, TypeError, "expected"), ({"question": "q"}, ValueError, "missing key"),
                                 (("q", 3), TypeError, "context is int")):
        with pytest.raises(error, match=fragment):
            trained.predict([bad])
    # a training answer not in its context: an error naming file and question, or skipped by choice
    doc = json.loads((workdir / "overfit.json").read_text())
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "not in the context"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    model = QuestionAnsweringModel(qa_config(workdir, broken))
    with pytest.raises(DataFormatError, match=r"broken\.json.*s0000t_000"):
        model.setup_training_data(model.cfg.train_ds)
    warn = QuestionAnsweringModel(qa_config(workdir, broken, unmatched_answers="warn"))
    warn.setup_training_data(warn.cfg.train_ds)
    assert warn._train_dl.dataset.stats.unmatched == ["s0000t_000"]
    # ... and kept (scored 0, not lost) when evaluating
    assert trained.evaluate(str(broken))["total"] == 16


@pytest.mark.slow
def test_the_example_script_runs_as_documented(tmp_path):
    """examples/question_answering.py on the shipped samples (BioASQ style): trains, tests, writes
    its files; then tests the saved .nemo again with do_training=false restore_from=..."""
    common = [f"exp_manager.exp_dir={tmp_path}", "trainer.enable_progress_bar=false"]
    # one epoch: the files and the restored run are checked, not the scores (each epoch validates and checkpoints)
    first = run_example("question_answering", ["trainer.max_epochs=1", *common], cwd=tmp_path)
    run = tmp_path / "biomegatron_qa" / "run"
    out = run / "test_predictions"
    assert '"mrr"' in first.stdout
    assert {p.name for p in out.iterdir()} == {"predictions.json", "nbest_predictions.json", "bioasq_submission.json"}
    nemo = run / "checkpoints" / "biomegatron_qa.nemo"
    run_example("question_answering", ["do_training=false", f"restore_from={nemo}", *common, "exp_manager.version=again"],
                cwd=tmp_path)
    redo = tmp_path / "biomegatron_qa" / "again" / "test_predictions" / "nbest_predictions.json"
    assert redo.read_text() == (out / "nbest_predictions.json").read_text()
