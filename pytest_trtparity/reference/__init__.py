"""Reference format v1: JSONL records of inputs and expected outputs, one chunk per line."""

from __future__ import annotations

from .codec import decode_tensor, encode_tensor
from .reader import Header, Record, ReferenceReader, read_records
from .writer import ReferenceWriter

FORMAT_TAG = "reference/1"

__all__ = [
    "FORMAT_TAG",
    "Header",
    "Record",
    "ReferenceReader",
    "ReferenceWriter",
    "decode_tensor",
    "encode_tensor",
    "read_records",
]
