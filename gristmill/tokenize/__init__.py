"""Byte-level BPE tokenization of documents into packed Arrow token shards (see docs/tokenize.md)."""
