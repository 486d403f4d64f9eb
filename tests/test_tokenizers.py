"""WordPiece and SentencePiece behind BioTokenizer: offsets, round trips, specials, BERT parity, factory.

Always-on tests use vocabularies trained here on the shipped sample text; the BERT-vocabulary
and PubMed parity tests use ../shared/data and skip without it.
"""

import json
import pickle
import shutil
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.tokenizers import (SPECIAL_TOKENS, SentencePieceTokenizer, WordPieceTokenizer,
                                         build_tokenizer)
from biomegatron_nemo.tokenizers.train import train_sentencepiece, train_wordpiece

SAMPLE = Path(__file__).parent / "fixtures" / "tokenizers" / "biomedical_sample.txt"
SHARED = Path(__file__).parents[2] / "shared" / "data"
BERT_VOCAB = SHARED / "vocab" / "bert-base-uncased-vocab.txt"
PUBMED = SHARED / "pubmed" / "PubMedAbstract_1MB.txt"

HARD_WORDS = "Treatment with β-blockers, IL-2 and 5-fluorouracil in naïve T cells."
SENTENCES = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line][:40]
needs_bert = pytest.mark.skipif(not BERT_VOCAB.exists(), reason="shared BERT vocab not present")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("spm")
    # character_coverage=1: every character of the sample gets a piece, so round trips are exact.
    return train_sentencepiece([str(SAMPLE)], str(out), 400, cased=True, character_coverage=1.0,
                               progress=False)[0]


@pytest.fixture(scope="module")
def spm_uncased_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("spm_uncased")
    return train_sentencepiece([str(SAMPLE)], str(out), 400, cased=False, character_coverage=1.0,
                               progress=False)[0]


@pytest.fixture(scope="module")
def wp_vocab(tmp_path_factory):
    out = tmp_path_factory.mktemp("wp")
    return train_wordpiece([str(SAMPLE)], str(out), 600, min_frequency=1, soft_limit=True,
                           progress=False)[0]


@pytest.fixture(scope="module")
def bert():
    if not BERT_VOCAB.exists():
        pytest.skip("shared BERT vocab not present")
    return WordPieceTokenizer(BERT_VOCAB, special_tokens=["@CHEMICAL$", "@GENE$"])


def _fold(s: str, lowercase: bool) -> str:
    """What a sub-token should read as: NFKC, accents stripped, optionally lower-cased."""
    s = "".join(c for c in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", s))
                if unicodedata.category(c) != "Mn")
    return s.lower() if lowercase else s


def assert_offsets_cover_tokens(tok, text, lowercase):
    enc = tok.encode(text)
    assert len(enc.offsets) == len(enc.ids) == len(enc.tokens) == len(enc.word_ids)
    pieces = []
    for token, (start, end) in zip(enc.tokens, enc.offsets):
        if token in ("▁", "[UNK]"):
            continue
        assert _fold(text[start:end], lowercase) == _fold(token.removeprefix("##"), lowercase), \
            (token, text[start:end])
        pieces.append((start, end))
    assert pieces == sorted(pieces)
    return enc


# --- offsets ------------------------------------------------------------------------------------
@needs_bert
def test_bert_offsets_on_greek_hyphen_digit_and_accent(bert):
    enc = bert.encode(HARD_WORDS)
    spans = [(t, HARD_WORDS[s:e]) for t, (s, e) in zip(enc.tokens, enc.offsets)]
    assert spans[2:6] == [("β", "β"), ("-", "-"), ("block", "block"), ("##ers", "ers")]
    assert spans[7:10] == [("il", "IL"), ("-", "-"), ("2", "2")]
    assert ("naive", "naïve") in spans  # uncased BERT strips the accent; the offset keeps it
    fluoro = [s for t, s in spans[11:] if t.startswith("##") or s.startswith("flu")]
    assert "".join(fluoro).startswith("fluorouracil")
    assert_offsets_cover_tokens(bert, HARD_WORDS, lowercase=True)


def test_wordpiece_offsets_with_a_trained_vocab(wp_vocab):
    tok = WordPieceTokenizer(wp_vocab)
    for text in [HARD_WORDS] + SENTENCES:
        assert_offsets_cover_tokens(tok, text, lowercase=True)


def test_sentencepiece_offsets_point_at_the_word_not_the_space(spm_model):
    tok = SentencePieceTokenizer(spm_model)
    text = "  " + HARD_WORDS
    enc = assert_offsets_cover_tokens(tok, text, lowercase=False)
    assert not any(text[s:e].startswith(" ") for s, e in enc.offsets)
    for word in ("β", "IL", "naïve", "fluorouracil"):
        # the word's first sub-token starts exactly at the word (a lone ▁ has an empty span there)
        assert text.index(word) in [s for s, _ in enc.offsets], word
    for text in SENTENCES:
        assert_offsets_cover_tokens(tok, text, lowercase=False)


def test_uncased_sentencepiece_lowercases_but_offsets_keep_the_original(spm_uncased_model):
    tok = SentencePieceTokenizer(spm_uncased_model)
    text = "IL-2 Naïve"
    enc = assert_offsets_cover_tokens(tok, text, lowercase=True)
    assert all(t == t.lower() for t in enc.tokens)
    spans = [text[s:e] for s, e in enc.offsets if e > s]
    assert "".join(spans) == "IL-2Naïve"


# --- round trips ----------------------------------------------------------------------------------
@needs_bert
def test_bert_round_trip(bert):
    for text in [HARD_WORDS] + SENTENCES:
        ids = bert.encode(text).ids
        assert bert.unk_id not in ids
        assert bert.encode(bert.decode(ids)).ids == ids


def test_sentencepiece_round_trip(spm_model):
    tok = SentencePieceTokenizer(spm_model)
    for text in [HARD_WORDS] + SENTENCES:
        ids = tok.encode(text).ids
        assert tok.unk_id not in ids
        decoded = tok.decode(ids)
        assert decoded == text  # cased NFKC model, text already normal: exact
        assert tok.encode(decoded).ids == ids


# --- independent check against transformers -------------------------------------------------------
def _pubmed_sentences(n):
    sentences = []
    with open(PUBMED, encoding="utf-8") as f:
        for line in f:
            sentences += [s.strip() + "." for s in line.split(". ") if len(s) > 20]
            if len(sentences) >= n:
                return sentences[:n]
    return sentences


@pytest.mark.skipif(not (BERT_VOCAB.exists() and PUBMED.exists()), reason="shared data not present")
@pytest.mark.parametrize("cased", [False, True])
def test_same_ids_and_offsets_as_bert_tokenizer_fast(tmp_path, cased):
    transformers = pytest.importorskip("transformers")
    # transformers 5 builds a 5-token vocab from BertTokenizerFast(vocab_file=...): load a directory.
    shutil.copy(BERT_VOCAB, tmp_path / "vocab.txt")
    ref = transformers.BertTokenizerFast.from_pretrained(str(tmp_path), do_lower_case=not cased)
    assert ref.vocab_size == 30522
    ours = WordPieceTokenizer(BERT_VOCAB, cased=cased)
    sentences = _pubmed_sentences(300)
    assert len(sentences) == 300
    expected = ref(sentences, add_special_tokens=False, return_offsets_mapping=True)
    got = ours.encode_batch(sentences)
    assert [e.ids for e in got] == expected["input_ids"]
    assert [e.offsets for e in got] == [[tuple(o) for o in offs] for offs in expected["offset_mapping"]]


# --- words, specials, vocab form -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_encode_words_gives_word_ids_and_keeps_empty_words(kind, wp_vocab, spm_model):
    tok = WordPieceTokenizer(wp_vocab) if kind == "wordpiece" else SentencePieceTokenizer(spm_model)
    words = ["Cisplatin", "-", "induced", "", "nephrotoxicity", "\x00"]
    enc = tok.encode_words(words)
    assert sorted(set(enc.word_ids)) == list(range(len(words)))
    assert enc.word_ids == sorted(enc.word_ids)
    for token, (s, e), w in zip(enc.tokens, enc.offsets, enc.word_ids):
        if token not in ("▁", "[UNK]"):
            assert _fold(words[w][s:e], True) == _fold(token.removeprefix("##"), True)
    # nothing to tokenise: one [UNK] keeps labels aligned (BERT's clean-up also empties "\x00")
    assert [t for t, i in zip(enc.ids, enc.word_ids) if i == 3] == [tok.unk_id]
    # every word's first sub-token is not a continuation, the others are
    firsts = [i for k, i in enumerate(enc.ids) if k == 0 or enc.word_ids[k] != enc.word_ids[k - 1]]
    assert not any(tok.is_continuation(i) for i in firsts)


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_registered_specials_stay_single_tokens(kind, wp_vocab, spm_model):
    build = (lambda **kw: WordPieceTokenizer(wp_vocab, **kw)) if kind == "wordpiece" \
        else (lambda **kw: SentencePieceTokenizer(spm_model, **kw))
    text = "@CHEMICAL$ inhibited @GENE$ expression;@GENE$."
    plain = build()
    assert len(plain.encode("@CHEMICAL$").ids) > 1  # unregistered, the marker is split
    tok = build(special_tokens=["@CHEMICAL$", "@GENE$"])
    assert tok.extra_special_tokens == ["@CHEMICAL$", "@GENE$"]
    chem, gene = tok.token_to_id("@CHEMICAL$"), tok.token_to_id("@GENE$")
    assert chem >= plain.vocab_size and gene == chem + 1 and tok.vocab_size == plain.vocab_size + 2
    enc = tok.encode(text)
    assert enc.ids.count(chem) == 1 and enc.ids.count(gene) == 2
    for i, (s, e) in zip(enc.ids, enc.offsets):
        if i in (chem, gene):
            assert text[s:e] == tok.id_to_token(i)
    words = tok.encode_words(["@CHEMICAL$", "inhibited", "@GENE$"])
    assert words.ids[0] == chem and words.ids[-1] == gene
    assert tok.decode(enc.ids, skip_special_tokens=False).count("@GENE$") == 2
    assert "@GENE$" not in tok.decode(enc.ids)


def test_bert_specials_and_megatron_surface(bert):
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (0, 100, 101, 102, 103)
    assert (bert.pad, bert.cls, bert.sep, bert.mask) == (0, 101, 102, 103)
    assert bert.vocab_size == 30524 and len(bert.vocab) == len(bert.inv_vocab) == 30524
    assert bert.inv_vocab[bert.vocab["##ers"]] == "##ers" and bert.is_continuation(bert.vocab["##ers"])
    assert bert.tokenize("IL-2 [MASK]") == bert.encode("IL-2 [MASK]").ids == [6335, 1011, 1016, 103]
    assert bert.artifacts == {"vocab_file": str(BERT_VOCAB)}


def test_megatron_dataset_cache_identity(wp_vocab, spm_model):
    # megatron-core json.dumps the dataset config with default=lambda obj: obj.unique_identifiers
    def ident(tok):
        return json.dumps({"tokenizer": tok}, default=lambda obj: obj.unique_identifiers)

    wp, sp = WordPieceTokenizer(wp_vocab), SentencePieceTokenizer(spm_model)
    assert ident(wp) == ident(WordPieceTokenizer(wp_vocab)) != ident(sp)
    assert ident(sp) != ident(SentencePieceTokenizer(spm_model, special_tokens=["@GENE$"]))
    assert json.loads(ident(sp))["tokenizer"]["vocab_size"] == 400


def test_sentencepiece_vocab_is_in_wordpiece_form(spm_model):
    tok = SentencePieceTokenizer(spm_model)
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    # our trainer puts the BERT specials at 0-4 inside the model: no ids appended
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    assert [tok.inv_vocab[i] for i in range(5)] == list(SPECIAL_TOKENS)
    assert tok.vocab_size == sp.get_piece_size() == 400
    for i in range(5, tok.vocab_size):
        piece, form = sp.id_to_piece(i), tok.inv_vocab[i]
        if piece.startswith("▁"):
            assert form == (piece[1:] or "▁") and not tok.is_continuation(i)
        else:
            assert form == "##" + piece and tok.is_continuation(i)
        assert tok.vocab[form] == i
    enc = tok.encode("Cisplatin-induced nephrotoxicity")
    # whole-word masking reads only inv_vocab: its word boundaries must be encode's word_ids
    starts = [k for k, i in enumerate(enc.ids) if not tok.inv_vocab[i].startswith("##")]
    assert starts == [enc.word_ids.index(w) for w in sorted(set(enc.word_ids))]
    assert max(enc.word_ids) == 1
    assert tok.tokenize("Cisplatin-induced") == enc.ids[:enc.word_ids.index(1)]
    assert tok.artifacts == {"model_file": spm_model}


def test_sentencepiece_model_without_bert_specials_gets_them_appended(tmp_path):
    prefix = tmp_path / "plain"
    spm.SentencePieceTrainer.train(input=str(SAMPLE), model_prefix=str(prefix), vocab_size=300,
                                   minloglevel=2)  # sentencepiece defaults: <unk>=0 <s>=1 </s>=2
    tok = SentencePieceTokenizer(f"{prefix}.model")
    assert tok.unk_id == 0 and tok.inv_vocab[0] == "[UNK]"
    assert [tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id] == [300, 301, 302, 303]
    assert tok.vocab_size == 304 and tok.inv_vocab[1] == "<s>"
    assert tok.decode([tok.cls_id] + tok.encode("aspirin").ids + [tok.sep_id],
                      skip_special_tokens=False) == "[CLS] aspirin [SEP]"


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_batch_methods_equal_one_by_one(kind, wp_vocab, spm_model):
    tok = WordPieceTokenizer(wp_vocab) if kind == "wordpiece" else SentencePieceTokenizer(spm_model)
    assert tok.encode_batch(SENTENCES) == [tok.encode(s) for s in SENTENCES]
    texts = SENTENCES + ["[CLS] aspirin [SEP]"]  # a special in the batch takes the slow path
    assert tok.tokenize_batch(texts) == [tok.tokenize(s) for s in texts] \
        == [tok.encode(s).ids for s in texts]
    assert tok.tokenize_batch(texts)[-1][0] == tok.cls_id


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_inv_vocab_is_ordered_by_id(kind, wp_vocab, spm_model):
    # megatron-core draws random replacement tokens from list(inv_vocab): a hash-map order would
    # make seeded pretraining data differ between processes
    tok = WordPieceTokenizer(wp_vocab) if kind == "wordpiece" else SentencePieceTokenizer(spm_model)
    assert list(tok.inv_vocab) == list(range(tok.vocab_size))


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_tokenizers_pickle_for_worker_processes(kind, wp_vocab, spm_model):
    build = WordPieceTokenizer if kind == "wordpiece" else SentencePieceTokenizer
    tok = build(wp_vocab if kind == "wordpiece" else spm_model, special_tokens=["@GENE$"])
    again = pickle.loads(pickle.dumps(tok))
    text = HARD_WORDS + " @GENE$"
    assert again.encode(text) == tok.encode(text) and again.special_ids == tok.special_ids


# --- factory and errors ---------------------------------------------------------------------------
def test_build_tokenizer_from_dict_and_omegaconf(wp_vocab, spm_model):
    wp = build_tokenizer({"library": "wordpiece", "vocab_file": wp_vocab, "cased": True})
    assert isinstance(wp, WordPieceTokenizer) and wp.cased
    assert wp.encode("IL").tokens != WordPieceTokenizer(wp_vocab).encode("IL").tokens
    cfg = OmegaConf.create({"library": "sentencepiece", "model_file": spm_model,
                            "special_tokens": ["@GENE$"]})
    sp = build_tokenizer(cfg)
    assert isinstance(sp, SentencePieceTokenizer) and sp.extra_special_tokens == ["@GENE$"]
    # one config template can list both file keys: null means unset
    template = {"library": "sentencepiece", "vocab_file": None, "model_file": spm_model, "cased": None}
    assert isinstance(build_tokenizer(template), SentencePieceTokenizer)
    # a model rebuilt from its own artifacts is the same tokenizer (what .nemo restore relies on)
    again = build_tokenizer({"library": "sentencepiece", **sp.artifacts, "special_tokens": ["@GENE$"]})
    assert again.encode(HARD_WORDS) == sp.encode(HARD_WORDS)


@pytest.mark.parametrize("cfg, message", [
    ({"library": "bpe", "vocab_file": "v.txt"}, "tokenizer: library: 'bpe' is not one of ['wordpiece', 'sentencepiece']"),
    ({"library": "wordpiece"}, "tokenizer: vocab_file: is required for library='wordpiece'"),
    ({"library": "sentencepiece", "vocab_file": "v.txt"}, "vocab_file: ['vocab_file'] are not used"),
    ({"library": "sentencepiece", "model_file": "m.model", "cased": True}, "cased: ['cased'] are not used"),
    ({"library": "wordpiece", "vocab_file": "/no/such/vocab.txt"},
     "tokenizer: vocab_file: '/no/such/vocab.txt': file does not exist"),
    ({"library": "sentencepiece", "model_file": "/no/such.model"},
     "tokenizer: model_file: '/no/such.model': file does not exist"),
    ({"library": "wordpiece", "vocab_fil": "v.txt"}, "tokenizer: vocab_fil: unknown key; did you mean vocab_file?"),
])
def test_build_tokenizer_errors_name_the_key_and_path(cfg, message):
    with pytest.raises(ValueError) as err:
        build_tokenizer(cfg)
    assert message in str(err.value)


def test_bad_values_and_files_are_reported(wp_vocab, tmp_path):
    with pytest.raises(ValueError, match="tokenizer: cased: wrong type"):
        build_tokenizer({"library": "wordpiece", "vocab_file": wp_vocab, "cased": "maybe"})
    with pytest.raises(ValueError, match="tokenizer: special_tokens: wrong type"):
        build_tokenizer({"library": "wordpiece", "vocab_file": wp_vocab, "special_tokens": "@GENE$"})
    not_a_model = tmp_path / "vocab.model"
    not_a_model.write_text("[PAD]\n[UNK]\n")
    with pytest.raises(DataFormatError, match=r"vocab.model: not a SentencePiece model: a text file"):
        SentencePieceTokenizer(not_a_model)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        WordPieceTokenizer(tmp_path / "missing.txt")
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("[PAD]\n[UNK]\naspirin\nasthma\naspirin\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"repeated.txt:5: token 'aspirin' repeats line 3"):
        WordPieceTokenizer(repeated)
    (tmp_path / "binary.model").write_bytes(b"\xff\xfe\x00spm\n")
    with pytest.raises(DataFormatError, match=r"binary.model:1: invalid UTF-8"):
        WordPieceTokenizer(tmp_path / "binary.model")


def test_wordpiece_vocab_without_specials_gets_them_appended(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("aspirin\n##s\nasthma\n", encoding="utf-8")
    tok = WordPieceTokenizer(path, special_tokens=["@GENE$"])
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [3, 4, 5, 6, 7]
    assert tok.token_to_id("@GENE$") == 8 and tok.vocab_size == 9 == len(set(tok.vocab.values()))
    assert tok.encode("aspirins cough @GENE$").tokens == ["aspirin", "##s", "[UNK]", "@GENE$"]
