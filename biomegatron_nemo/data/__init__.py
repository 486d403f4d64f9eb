"""Readers and torch datasets: benchmark files (CoNLL NER, ChemProt, SQuAD/BioASQ) and pretraining corpora."""
