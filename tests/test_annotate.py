"""``biomegatron annotate``: documents in three formats, entities at exact offsets of the original
text in four formats, several models merged by one rule, chunks that make a crashed run resume to
the same bytes, and ranks whose chunks join into the single process's output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from biomegatron_nemo.annotation.annotator import Annotator, Entity, merge_entities
from biomegatron_nemo.annotation.documents import Document, Reject, detect_format, read_documents
from biomegatron_nemo.annotation.job import annotate_file
from biomegatron_nemo.annotation.writers import document_text
from biomegatron_nemo.cli import main as cli_main
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.sentence_split import sentence_spans
from helpers.processes import clean_env

LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
ABSTRACTS = [
    ("Naloxone reverses the antihypertensive effect of clonidine.",
     "In unanesthetized, spontaneously hypertensive rats the decrease in blood pressure produced by clonidine was "
     "reversed by naloxone.  The hypotensive effect of alpha-methyldopa was also partially reversed."),
    ("Lidocaine-induced cardiac asystole.", "A 50-mg bolus of lidocaine resulted in profound depression of the "
     "sinoatrial and atrioventricular nodal pacemakers. Émile Durand, M.D., noted it (see Fig. 2)."),
    ("Empty abstract.", ""),
]


def test_sentence_spans_are_offsets_of_the_original_text():
    text = "  Mice  received 2.5 mg/kg\n(see Fig. 2).\t All   survived é.  Données é. 6 mg./kg. in mice was ok. "
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["Mice  received 2.5 mg/kg\n(see Fig. 2).", "All   survived é.",
                                             "Données é.", "6 mg./kg. in mice was ok."]
    assert sentence_spans(" \n ") == []


def test_overlaps_go_to_the_longer_span_then_the_higher_score_then_the_first_model():
    a = Entity(0, 8, "Naloxone", "Chemical", 0.9, 0)
    longer = Entity(0, 17, "Naloxone reverses", "Disease", 0.5, 1)
    same_span_lower = Entity(0, 8, "Naloxone", "Disease", 0.8, 1)
    same_score_later_model = Entity(0, 8, "Naloxone", "Disease", 0.9, 1)
    apart = Entity(20, 25, "x", "Disease", 0.1, 1)
    assert merge_entities([a, longer, apart]) == [longer, apart]
    assert merge_entities([same_span_lower, a]) == [a]
    assert merge_entities([same_score_later_model, a]) == [a]
    assert merge_entities([apart, a]) == [a, apart]  # no overlap: both, in document order


def test_three_input_formats_read_as_the_same_documents_and_bad_records_are_named(tmp_path):
    (tmp_path / "a.pubtator").write_text("".join(
        f"{i}|t|{t}\n{i}|a|{a}\n{i}\t0\t3\tNal\tChemical\tD1\n\n" for i, (t, a) in enumerate(ABSTRACTS)))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "title": t, "abstract": a}) + "\n"
                                              for i, (t, a) in enumerate(ABSTRACTS)))
    (tmp_path / "a.txt").write_text("".join(f"{t} {a}\n" for t, a in ABSTRACTS))
    assert [detect_format(tmp_path / n) for n in ("a.pubtator", "a.jsonl", "a.txt")] == ["pubtator", "jsonl", "text"]
    pubtator, jsonl = list(read_documents(tmp_path / "a.pubtator")), list(read_documents(tmp_path / "a.jsonl"))
    assert pubtator == jsonl and [d.id for d in pubtator] == ["0", "1", "2"]
    assert pubtator[0].text == f"{ABSTRACTS[0][0]} {ABSTRACTS[0][1]}"  # PubTator's offsets: one space between
    assert [(d.id, d.text) for d in read_documents(tmp_path / "a.txt")] == [
        (str(i + 1), d.text) for i, d in enumerate(pubtator)]  # ids: line numbers

    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "ok"}\n{"id": 2, "text": \n{"id": 3}\n\n{"id": 4, "text": 5}\n')
    items = list(read_documents(tmp_path / "bad.jsonl"))
    assert items[0] == Document.of_text("1", "ok")
    assert [(r.line, r.reason.split(":")[0]) for r in items[1:]] == [
        (2, "invalid JSON"), (3, "no \"text\", and not both \"title\" and \"abstract\""), (5, "'text' is int, not a string")]
    assert str(items[1].error()).startswith(f"{tmp_path / 'bad.jsonl'}:2: invalid JSON")
    (tmp_path / "bad.pubtator").write_text("1|t|A title\n1|a|An abstract\n\n2|a|No title\n\n3|t|T\n4|a|A\n\n5|t|T\ngarbage\n")
    rejects = [i for i in read_documents(tmp_path / "bad.pubtator") if isinstance(i, Reject)]
    assert [(r.line, r.reason[:30]) for r in rejects] == [
        (4, "a PubTator document is one 'ID"), (7, "the abstract's id '4' is not t"), (10, "expected 'ID|t|title', 'ID|a|a")]


def test_writers_keep_offsets_and_passages():
    document = Document.of_title_abstract("7", "Cisplatin toxicity.", "Rats <b> got\ncisplatin.")
    entities = [Entity(0, 9, "Cisplatin", "Chemical", 0.91234, 0), Entity(33, 42, "cisplatin", "Chemical", 0.5, 1)]
    assert document.text[33:42] == "cisplatin"
    assert document_text("pubtator", document, entities, ["Chemical"]) == (
        "7|t|Cisplatin toxicity.\n7|a|Rats <b> got cisplatin.\n7\t0\t9\tCisplatin\tChemical\t-\n"
        "7\t33\t42\tcisplatin\tChemical\t-\n\n")
    bioc = json.loads(document_text("bioc-json", document, entities, ["Chemical"]))
    title, abstract = bioc["passages"]
    assert (title["offset"], abstract["offset"]) == (0, 20)
    assert [a["locations"] for a in abstract["annotations"]] == [[{"offset": 33, "length": 9}]]
    assert title["annotations"][0]["infons"] == {"type": "Chemical", "score": "0.9123"}
    row = json.loads(document_text("jsonl", document, entities, ["Chemical"]))
    assert [row["text"][e["start"]:e["end"]] for e in row["entities"]] == ["Cisplatin", "cisplatin"]
    page = document_text("html", document, entities, ["Chemical"])
    assert "Rats &lt;b&gt; got\n<mark" in page and page.count("<mark") == 2


@pytest.fixture(scope="module")
def ner_models(tmp_path_factory, tiny_vocab, megatron_single):
    """Two untrained micro NER models (different seeds: entities that overlap and differ), as .nemo."""
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    folder = tmp_path_factory.mktemp("annotate_models")
    paths = []
    for seed in (1, 2):
        model = TokenClassificationModel(OmegaConf.create({
            "seed": seed, "tokenizer": {"library": "wordpiece", "vocab_file": str(tiny_vocab)},
            "encoder": {"preset": "micro", "layer_spec": "portable"}, "label_map": LABELS}))
        paths.append(folder / f"ner{seed}.nemo")
        model.save_to(str(paths[-1]))
    return paths


@pytest.fixture()
def corpus_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": f"d{i}", "title": t, "abstract": a} for i, (t, a) in enumerate(ABSTRACTS * 4)]
    rows.insert(5, {"id": "plain", "text": "Haloperidol   induced\ttardive dyskinesia.\nIt did."})
    rows.insert(6, {"id": "empty", "text": ""})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_two_models_over_a_corpus_give_merged_entities_at_exact_offsets(ner_models, corpus_file, tmp_path):
    from biomegatron_nemo.annotation.annotator import load_ner_models

    output = tmp_path / "out.jsonl"
    summary = annotate_file([str(p) for p in ner_models], corpus_file, output, chunk_documents=5, progress=False)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    documents = [d for d in read_documents(corpus_file)]
    assert summary["documents"] == len(rows) == 14 and not (tmp_path / "out.jsonl.parts").exists()
    assert [r["id"] for r in rows] == [d.id for d in documents] and summary["entities"] > 20
    first, second = (Annotator(load_ner_models([p])).annotate(documents) for p in ner_models)
    for row, document, mine, theirs in zip(rows, documents, first, second):
        assert row["text"] == document.text
        for e in row["entities"]:
            assert document.text[e["start"]:e["end"]] == e["text"]
        expected = merge_entities(mine + [Entity(e.start, e.end, e.text, e.type, e.score, 1) for e in theirs])
        assert [(e["start"], e["end"], e["type"], e["model"]) for e in row["entities"]] == [
            (e.start, e.end, e.type, e.model) for e in expected]
    assert rows[6] == {"id": "empty", "text": "", "entities": []}


@pytest.mark.parametrize("output_format", ["pubtator", "bioc-json"])
def test_a_crashed_run_resumes_and_ranks_join_into_the_single_process_bytes(ner_models, corpus_file, tmp_path,
                                                                            monkeypatch, output_format):
    models = [str(ner_models[0])]
    single = tmp_path / "single.out"
    annotate_file(models, corpus_file, single, output_format=output_format, chunk_documents=3, progress=False)
    if output_format == "bioc-json":
        assert len(json.loads(single.read_text())["documents"]) == 14

    resumed = tmp_path / "resumed.out"
    calls, crashes = [], [RuntimeError("killed")]
    original = Annotator.annotate

    def crash_on_third_chunk(self, documents):
        calls.append(len(documents))
        if len(calls) == 3 and crashes:
            raise crashes.pop()
        return original(self, documents)

    monkeypatch.setattr(Annotator, "annotate", crash_on_third_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        annotate_file(models, corpus_file, resumed, output_format=output_format, chunk_documents=3, progress=False)
    assert not resumed.exists()
    parts = sorted(p.name for p in (tmp_path / "resumed.out.parts").iterdir())
    assert parts == ["chunk-0000000.json", "chunk-0000000.part", "chunk-0000001.json", "chunk-0000001.part",
                     "settings.json"]
    calls.clear()
    annotate_file(models, corpus_file, resumed, output_format=output_format, chunk_documents=3, progress=False)
    assert calls == [3, 3, 2]  # chunks 2, 3 and 4 only (14 documents)
    assert resumed.read_bytes() == single.read_bytes()

    ranked = tmp_path / "ranked.out"
    monkeypatch.setattr(Annotator, "annotate", original)
    assert annotate_file(models, corpus_file, ranked, output_format=output_format, chunk_documents=3,
                         progress=False, rank=1, world=2) is None  # chunks 1 and 3; rank 0 joins
    assert not ranked.exists()
    annotate_file(models, corpus_file, ranked, output_format=output_format, chunk_documents=3, progress=False,
                  rank=0, world=2)
    assert ranked.read_bytes() == single.read_bytes()

    stale = tmp_path / "stale.out"
    (tmp_path / "stale.out.parts").mkdir()
    (tmp_path / "stale.out.parts" / "settings.json").write_text("{}")
    with pytest.raises(ValueError, match="written by a run with other settings"):
        annotate_file(models, corpus_file, stale, output_format=output_format, chunk_documents=3, progress=False)


@pytest.mark.slow
def test_the_command_stops_on_a_bad_record_or_under_torchrun_skips_it_into_a_rejects_file(ner_models, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": 1, "text": "Aspirin induced asthma."}\n{"id": 2, "text": \n{"id": 3, "text": "Ok."}\n')
    command = [sys.executable, "-m", "biomegatron_nemo", "annotate", str(ner_models[0]), "--input", str(corpus),
               "--output", str(tmp_path / "out.pubtator"), "--no-progress", "--chunk-documents", "1"]
    # the command's own code in this process (a fresh one costs seconds of imports): the error it
    # exits with (status 1) is the line it prints
    with pytest.raises(SystemExit) as stopped:
        cli_main(command[3:])
    assert stopped.value.code == (
        f"biomegatron annotate: {corpus}:2: invalid JSON: Expecting value (column 19); expected {{\"id\", \"text\"}} "
        "or {\"id\", \"title\", \"abstract\"}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command[1:]]
    skipped = subprocess.run([*torchrun, "--on-error", "skip"], capture_output=True,
                             text=True, env=clean_env(), timeout=300)  # rank 1 meets the bad record, rank 0 joins
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert skipped.stdout.startswith("2 documents, ") and ", 1 rejected, " in skipped.stdout
    (reject,) = [json.loads(line) for line in (tmp_path / "out.pubtator.rejects.jsonl").read_text().splitlines()]
    assert reject == {"path": str(corpus), "line": 2, "reason": reject["reason"]} and "invalid JSON" in reject["reason"]
    assert (tmp_path / "out.pubtator").read_text().startswith("1|t|Aspirin induced asthma.\n1|a|\n")


def _relative_error(output, reference) -> float:
    return float((output.logits - reference.logits).norm() / reference.logits.norm())


def test_engines_run_the_models_forward_in_bf16_onnxruntime_and_int8(ner_models, corpus_file, tmp_path):
    import onnx
    import torch

    from biomegatron_nemo.annotation.annotator import load_ner_models
    from biomegatron_nemo.annotation.engines import EngineSettings, bf16_supported, make_forward
    from biomegatron_nemo.export.onnx import sample_inputs

    (model,) = load_ner_models([ner_models[0]])
    batch = sample_inputs(model, batch_size=3, seq_len=13)
    with torch.no_grad():
        reference = model(**batch)
        onnx_fp32 = make_forward(model, EngineSettings(backend="onnxruntime"), tmp_path / "fp32")(**batch)
        int8 = make_forward(model, EngineSettings(backend="onnxruntime", quantize="int8"), tmp_path / "int8")(**batch)
    assert type(onnx_fp32) is type(reference) and onnx_fp32.logits.dtype == torch.float32
    assert (onnx_fp32.logits - reference.logits).abs().max() < 1e-4  # the same graph
    quantized = onnx.load(str(tmp_path / "int8" / "model.int8.onnx"))
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in quantized.graph.initializer) >= 4 * 2  # QKV, proj, fc1, fc2
    assert 1e-4 < _relative_error(int8, reference) < 0.1  # int8 weights: close, not equal
    if bf16_supported(torch.device("cpu")):
        with torch.no_grad():
            bf16 = make_forward(model, EngineSettings(precision="bf16"), tmp_path)(**batch)
        assert bf16.logits.dtype == torch.float32 and 1e-5 < _relative_error(bf16, reference) < 0.05
    else:
        with pytest.raises(ValueError, match="no native bf16"):
            make_forward(model, EngineSettings(precision="bf16"), tmp_path)

    documents = list(read_documents(corpus_file))
    plain = Annotator([model]).annotate(documents)
    through_onnx = Annotator([model], engine=EngineSettings(backend="onnxruntime")).annotate(documents)
    spans = [[(e.start, e.end, e.type) for e in entities] for entities in plain]
    assert [[(e.start, e.end, e.type) for e in entities] for entities in through_onnx] == spans
    assert max(abs(a.score - b.score) for x, y in zip(plain, through_onnx) for a, b in zip(x, y)) < 1e-5


def test_engine_options_that_do_not_go_together_are_refused_by_name(ner_models, tmp_path):
    from biomegatron_nemo.annotation.engines import EngineSettings

    with pytest.raises(ValueError, match=r"quantize=int8 is ONNX Runtime's .*--backend onnxruntime"):
        EngineSettings(quantize="int8")
    with pytest.raises(ValueError, match="backend=onnxruntime runs the fp32 ONNX export"):
        EngineSettings(precision="bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match=r"precision='fp16': expected one of fp32, bf16"):
        EngineSettings(precision="fp16")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Aspirin induced asthma.\n")
    command = [sys.executable, "-m", "biomegatron_nemo", "annotate", str(ner_models[0]), "--input", str(corpus),
               "--output", str(tmp_path / "out.jsonl"), "--quantize", "int8"]
    refused = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].endswith(
        "quantize=int8 is ONNX Runtime's dynamic quantisation: add backend=onnxruntime (--backend onnxruntime)")


def test_the_benchmark_regroups_conll_sentences_with_gold_spans_at_exact_offsets(tmp_path, monkeypatch):
    """benchmarks/annotate.py's documents: CoNLL sentences joined into abstracts; each gold span is
    its mention's words; a sentence's final stop is attached, so the splitter sees sentences."""
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("annotate")
    conll = tmp_path / "dev.tsv"
    conll.write_text("Naloxone\tB-Chemical\nreverses\tO\nclonidine\tB-Chemical\n.\tO\n\n"
                     "22\tB-Chemical\n-\tI-Chemical\noxacalcitriol\tI-Chemical\nworks\tO\n.\tO\n\n"
                     "Lidocaine\tB-Chemical\n.\tO\n\n")
    documents, gold = bench.documents_and_gold(str(conll), per_document=2, limit=5)
    assert documents == [("0", "Naloxone reverses clonidine. 22 - oxacalcitriol works."), ("1", "Lidocaine.")]
    assert sorted((n, documents[n][1][a:b], kind) for n, a, b, kind in gold) == [
        (0, "22 - oxacalcitriol", "Chemical"), (0, "Naloxone", "Chemical"), (0, "clonidine", "Chemical"),
        (1, "Lidocaine", "Chemical")]
    assert sentence_spans(documents[0][1]) == [(0, 28), (29, 54)]
    assert bench.f1({(0, 0, 8, "Chemical"), (0, 9, 17, "Chemical")}, gold) == 2 * 1 / (2 + 4)
    sys.modules.pop("annotate", None)
