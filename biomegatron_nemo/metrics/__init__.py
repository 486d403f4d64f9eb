"""Pure metric functions over plain Python data: conlleval F1, micro-F1, SQuAD EM/F1, BioASQ SAcc/LAcc/MRR."""
