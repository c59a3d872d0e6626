"""Embedding shards: the record format, the one reader, versioned outputs and their lock."""
