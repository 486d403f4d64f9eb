"""Checks a non-editable install of biomegatron_nemo (a wheel in a fresh environment): ``make package-check``.

Run with the fresh environment's python from outside the source tree, so that only the installed
package can be imported. It imports every module, finds the shipped sample data, and saves a
small NER model as a ``.nemo`` that a second, fresh process restores (the ``target:`` class path
inside the file must resolve from the installed package) with identical predictions.
"""

import importlib
import json
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["Cisplatin induced nephrotoxicity in rats.", "Naloxone reversed the respiratory depression."]


def import_everything() -> int:
    import biomegatron_nemo

    source = Path(biomegatron_nemo.__file__).resolve()
    assert "site-packages" in source.parts, f"imported the source tree, not the install: {source}"
    names = [m.name for m in pkgutil.walk_packages(biomegatron_nemo.__path__, "biomegatron_nemo.")]
    for name in names:
        importlib.import_module(name)
    for package in ("models", "checkpoints", "common", "encoder", "parallel", "tokenizers", "data", "metrics"):
        assert f"biomegatron_nemo.{package}" in names, f"biomegatron_nemo.{package} is not installed"
    return len(names)


def save_model(folder: Path) -> Path:
    from omegaconf import OmegaConf

    from biomegatron_nemo.runs.schemas import SAMPLES
    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    train = SAMPLES / "ner" / "train.tsv"
    assert train.is_file(), f"sample data missing from the install: {train}"
    vocab = train_wordpiece([str(SAMPLES / "pubmed_sample.txt")], str(folder), 1000, soft_limit=True,
                            progress=False)[0]
    model = TokenClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": vocab}, "encoder": {"preset": "micro"}, "train_ds": {"file": str(train)}}))
    path = folder / "ner.nemo"
    model.save_to(str(path))
    (folder / "expected.json").write_text(json.dumps(model.predict(TEXTS)))
    return path


def restore_and_predict(path: str) -> None:
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    model = TokenClassificationModel.restore_from(path)
    expected = json.loads((Path(path).parent / "expected.json").read_text())
    assert model.predict(TEXTS) == expected, "the restored model predicts differently"


def check_command() -> None:
    """The console script is installed and finds the run configs shipped in the wheel."""
    command = str(Path(sys.executable).parent / "biomegatron")
    listing = subprocess.run([command, "--help"], capture_output=True, text=True, check=True).stdout
    assert "finetune" in listing and "predict" in listing, listing
    shown = subprocess.run([command, "finetune", "ner", "--show-config", "trainer.max_epochs=1"],
                           capture_output=True, text=True, check=True).stdout
    assert "max_epochs: 1" in shown, shown[-2000:]


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--restore":
        restore_and_predict(sys.argv[2])
        return 0
    modules = import_everything()
    check_command()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(Path(tmp))
        subprocess.run([sys.executable, __file__, "--restore", str(path)], check=True, cwd=tmp)
    print(f"package check: {modules} modules import from the installed wheel; the biomegatron command "
          "composes a run from the shipped conf/; a .nemo saved by it restores in a fresh process with "
          "identical predictions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
