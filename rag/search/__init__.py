"""Finding passages in an index: hybrid retrieval (`retrieval`), near-duplicate groups (`dedup`),
resolving a passage id to its source (`passages`) and quote attribution (`quotes`)."""
