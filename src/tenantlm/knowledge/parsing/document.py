"""parse_document: one file's bytes to its text, in this process."""

from __future__ import annotations

from collections.abc import Callable

from tenantlm.knowledge.parsing.detect import detect_kind, kind_from_name
from tenantlm.knowledge.parsing.model import (
    Budget,
    Deadline,
    DocumentKind,
    ParsedDocument,
    ParseLimits,
    invalid,
    too_much_text,
)
from tenantlm.knowledge.parsing.pdf import pdf_text
from tenantlm.knowledge.parsing.structured import csv_text, json_text
from tenantlm.knowledge.parsing.text import html_text, normalise, plain_text
from tenantlm.knowledge.parsing.word import docx_text

Extractor = Callable[[bytes, ParseLimits, Budget], str]

_EXTRACTORS: dict[DocumentKind, Extractor] = {
    "txt": plain_text,
    "md": plain_text,
    "html": html_text,
    "pdf": pdf_text,
    "docx": docx_text,
    "json": json_text,
    "csv": csv_text,
}


def parse_document(data: bytes, *, filename: str, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    """The text of one file, or ``ParseError``. Pure: no disk, no network, no logging of its own (the libraries
    may log structural warnings). Bounded by ``limits`` where the code between library calls can check; use
    ``IsolatedParser`` for files from tenants, so that a library stuck or swelling inside one call is stopped."""
    deadline = Deadline(limits.max_seconds)
    check_name_and_size(data, filename=filename, limits=limits)
    kind = detect_kind(data, filename=filename)
    text = normalise(_EXTRACTORS[kind](data, limits, Budget(limits, deadline)))
    if len(text) > limits.max_output_chars:
        raise too_much_text(limits.max_output_chars)
    if not text:
        raise invalid("The file contains no text.")
    return ParsedDocument(kind=kind, text=text)


def check_name_and_size(data: bytes, *, filename: str, limits: ParseLimits) -> None:
    """The checks that need no parsing, in the order parse_document makes them: extension, then size."""
    kind_from_name(filename)
    if len(data) > limits.max_input_bytes:
        raise invalid(f"The file is larger than {limits.max_input_bytes:,} bytes.")
