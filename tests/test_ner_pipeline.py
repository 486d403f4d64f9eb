"""End to end without the encoder: the SAMPLE NER set is learnable through the whole data path.

A WordPiece vocabulary of 250 is trained on the sample (so entity words split into sub-tokens),
sentences are cut into 24-token windows, a tiny GRU tagger is trained for a few seconds on CPU,
and dev predictions go back through ``predictions_to_tags`` to conlleval F1. If alignment,
windowing, collation or the mapping back were wrong, F1 would collapse.
"""

import pytest
import torch

from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.data.token_classification import LabelMap, TokenClassificationDataset
from biomegatron_nemo.metrics.ner import ner_scores
from biomegatron_nemo.tokenizers.train import train_wordpiece
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

from _data_paths import SAMPLES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    train, dev = read_conll(SAMPLES / "ner" / "train.tsv"), read_conll(SAMPLES / "ner" / "dev.tsv")
    d = tmp_path_factory.mktemp("vocab")
    (d / "text.txt").write_text("\n".join(" ".join(s.words) for s in train) + "\n")
    train_wordpiece([str(d / "text.txt")], str(d), vocab_size=250, soft_limit=True, progress=False)
    return train, dev, WordPieceTokenizer(str(d / "vocab.txt"))


@pytest.fixture()
def one_thread():
    # intra-op threads only fight each other on a tiny model on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["first_subtoken", "all_subtokens"])
def test_tiny_tagger_learns_the_sample_through_windows(data, mode):
    train, dev, tok = data
    torch.manual_seed(0)
    labels = LabelMap.from_sentences(train)
    ds_train = TokenClassificationDataset(train, tok, labels, max_seq_length=24, mode=mode, window_overlap=8)
    ds_dev = TokenClassificationDataset(dev, tok, labels, max_seq_length=24, mode=mode, window_overlap=8)
    assert len(ds_dev) > 2 * len(dev)  # most sentences really are split into windows
    emb = torch.nn.Embedding(tok.vocab_size, 32)
    rnn = torch.nn.GRU(32, 32, batch_first=True, bidirectional=True)
    head = torch.nn.Linear(64, len(labels))
    opt = torch.optim.Adam([*emb.parameters(), *rnn.parameters(), *head.parameters()], lr=1e-2)
    loader = torch.utils.data.DataLoader(ds_train, batch_size=32, shuffle=True, collate_fn=ds_train.collate_fn)
    for _ in range(5):
        for b in loader:
            logits = head(rnn(emb(b["input_ids"]))[0])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        b = ds_dev.collate_fn([ds_dev[i] for i in reversed(range(len(ds_dev)))])
        pred = head(rnn(emb(b["input_ids"]))[0]).argmax(-1).tolist()
    tags = ds_dev.predictions_to_tags(pred, b["window_index"].tolist())
    assert [len(t) for t in tags] == [len(s) for s in dev]
    f1 = ner_scores([s.tags for s in dev], tags)["f1"]
    assert f1 > 0.8  # about 0.9-0.95 (deterministic: a fixed vocabulary, seed and thread count)
