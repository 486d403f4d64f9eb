"""Every file of the broken-input corpus gives exactly one DataFormatError naming that file."""

import pytest

from biomegatron_nemo.data.chemprot import read_chemprot
from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.squad import read_bioasq_golden, read_squad
from biomegatron_nemo.metrics.evaluate import main as evaluate

from _data_paths import BROKEN, FIXTURES


def _re_predictions(path):
    # prediction files are checked by the evaluation command against a gold file
    if evaluate(["re", "--gold", str(FIXTURES / "chemprot_header.tsv"), "--pred", str(path)]) == 2:
        raise DataFormatError(path, None, "(reported on stderr)")


READERS = {"ner_": read_conll, "chemprot_": read_chemprot, "squad_": read_squad,
           "bioasq_golden_": read_bioasq_golden, "re_pred_": _re_predictions}


@pytest.mark.parametrize("path", sorted(BROKEN.iterdir()), ids=lambda p: p.name)
def test_each_broken_file_is_rejected_with_its_name(path, capsys):
    reader = next((fn for prefix, fn in READERS.items() if path.name.startswith(prefix)), None)
    assert reader is not None, f"no reader registered for {path.name}"
    with pytest.raises(DataFormatError) as e:
        reader(path)
    message = str(e.value) + capsys.readouterr().err
    assert str(path) in message
