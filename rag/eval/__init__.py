"""Figures on question sets: retrieval hit@k and MRR (`retrieval`), answer quality (`answers`), the
plain-BM25 reference (`baseline`), intervals and paired comparisons (`stats`) and cross-validated
choices of settings (`quality`)."""
