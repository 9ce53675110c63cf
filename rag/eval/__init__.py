"""Figures on question sets: retrieval hit@k and MRR (`retrieval`) and answer quality (`answers`)."""
