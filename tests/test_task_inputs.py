"""Wrong input to the task models' ``predict`` / ``evaluate`` / ``answer``: a TypeError (wrong type)
or ValueError (wrong value) naming the method, the argument and the item's position, raised
before anything reaches the tokenizer or torch; evaluation files with labels outside the model's
label map are named by line. Untrained micro models: only the checks are under test."""

import pytest
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import DataFormatError

ENCODER = {"preset": "micro", "layer_spec": "portable"}


@pytest.fixture(scope="module")
def models(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    tokenizer = {"library": "wordpiece", "vocab_file": str(tiny_vocab)}

    def config(**extra):
        return OmegaConf.create({"tokenizer": tokenizer, "encoder": ENCODER, **extra})

    return {"ner": TokenClassificationModel(config(label_map=["O", "B-Chemical", "I-Chemical"])),
            "re": SequenceClassificationModel(config(label_map=["false", "CPR:3"])),
            "qa": QuestionAnsweringModel(config())}


#: model → the name of its predict argument, and one valid item
ITEMS = {"ner": ("texts", "aspirin and insulin"), "re": ("sentences", "@CHEMICAL$ inhibits @GENE$"),
         "qa": ("questions", {"question": "which drug?", "context": "aspirin and insulin"})}


@pytest.mark.parametrize("task", sorted(ITEMS))
def test_predict_refuses_a_non_list_and_names_the_bad_item(models, task):
    model, (argument, item) = models[task], ITEMS[task]
    assert len(model.predict([item, item])) == 2  # valid input works
    assert len(model.predict(iter([item]))) == 1  # any iterable, read once
    for bad in ("one text", None, 3):
        with pytest.raises(TypeError, match=rf"^predict: {argument} must be a list of .*, got {type(bad).__name__}"):
            model.predict(bad)
    with pytest.raises(TypeError, match=r"wrap a single one in a list"):
        model.predict(item if isinstance(item, str) else dict(item))
    for bad in (None, 3, b"bytes"):
        with pytest.raises(TypeError, match=rf"^predict: {argument}\[1\] is {type(bad).__name__}; expected"):
            model.predict([item, bad])
    with pytest.raises(ValueError, match=r"^predict: batch_size must be >= 1, got 0"):
        model.predict([item], batch_size=0)
    with pytest.raises(TypeError, match=r"^predict: batch_size must be an int, got str"):
        model.predict([item], batch_size="8")


def test_relation_and_qa_items_are_checked_field_by_field(models):
    re_model, qa = models["re"], models["qa"]
    with pytest.raises(ValueError, match=r"^predict: sentences\[1\] is empty; expected text with two entity markers"):
        re_model.predict(["@CHEMICAL$ and @GENE$", "  "])
    with pytest.raises(TypeError, match=r"^predict_spans: items\[0\] is tuple; expected a \(text, \(start, end\)"):
        re_model.predict_spans([("Aspirin inhibits COX-2.", (0, 7))])
    with pytest.raises(TypeError, match=r"^predict_spans: items\[0\]\[0\] is NoneType; expected a string"):
        re_model.predict_spans([(None, (0, 7), (17, 22))])
    with pytest.raises(ValueError, match=r"^predict: questions\[0\]: missing key\(s\) \['context'\]"):
        qa.predict([{"question": "q"}])
    with pytest.raises(TypeError, match=r"^predict: questions\[0\]\.context is int; expected a string"):
        qa.predict([("q", 3)])
    with pytest.raises(TypeError, match=r"^predict: questions\[0\] is tuple; expected \{'question'"):
        qa.predict([("q", "c", "extra")])
    with pytest.raises(ValueError, match=r"^predict: top_k must be >= 1, got 0"):
        qa.answer("which drug?", "aspirin", top_k=0)


@pytest.mark.parametrize("args, argument, kind", [((None, "aspirin"), "question", "NoneType"),
                                                  (("which drug?", 3), "context", "int"),
                                                  ((["which drug?"], "aspirin"), "question", "list")])
def test_answer_names_the_argument_of_the_wrong_type(models, args, argument, kind):
    with pytest.raises(TypeError, match=rf"^answer: {argument} is {kind}; expected a string"):
        models["qa"].answer(*args)


@pytest.mark.parametrize("task", sorted(ITEMS))
def test_evaluate_names_a_missing_or_wrong_file_argument(models, task, tmp_path):
    model = models[task]
    missing = tmp_path / "missing.tsv"
    with pytest.raises(FileNotFoundError, match=rf"^evaluate: file '{missing}' does not exist"):
        model.evaluate(missing)
    with pytest.raises(IsADirectoryError, match=rf"^evaluate: file '{tmp_path}' is a folder, not a file"):
        model.evaluate(str(tmp_path))
    with pytest.raises(TypeError, match=r"^evaluate: file must be a path \(str or os.PathLike\), got list"):
        model.evaluate([str(missing)])
    with pytest.raises(TypeError, match=r"^evaluate: file must be a path \(str or os.PathLike\), got NoneType"):
        model.evaluate(None)


def test_evaluation_labels_outside_the_label_map_are_named_by_line(models, tmp_path):
    ner_file = tmp_path / "dev.tsv"
    ner_file.write_text("Aspirin\tB-Chemical\nhelps\tO\n\nFever\tB-Disease\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"^{ner_file}:4: \[tag\] tag 'B-Disease' \(word 'Fever'\) was never seen"):
        models["ner"].evaluate(ner_file)
    re_file = tmp_path / "dev_re.tsv"
    re_file.write_text("1\t@CHEMICAL$ inhibits @GENE$.\tCPR:3\n2\t@CHEMICAL$ and @GENE$.\tCPR:9\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"^{re_file}:2: \[label\] label 'CPR:9' is not one of \['CPR:3', 'false'\]"):
        models["re"].evaluate(re_file)
