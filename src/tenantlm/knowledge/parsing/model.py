"""What parsing takes and gives: the limits, the parsed document, the one error, and the per-document deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tenantlm.errors import InvalidRequest

DocumentKind = Literal["txt", "md", "html", "pdf", "docx", "json", "csv"]
ParseErrorCode = Literal["unsupported_file", "invalid_file"]

DOCUMENT_KINDS: frozenset[str] = frozenset(get_args(DocumentKind))

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on one document. Going past any of them fails the file with ``invalid_file``; nothing is truncated
    silently (an index holding part of a file the tenant believes is whole would answer wrongly)."""

    max_input_bytes: int = 64 * MiB
    """Size of the file as uploaded."""
    max_output_chars: int = 10_000_000
    """Characters of extracted text (about 2.5 M tokens)."""
    max_seconds: float = 60.0
    """Wall-clock budget, checked between pages, paragraphs, rows and chunks of input. A parser stuck inside one
    library call is only stopped by ``IsolatedParser``'s timeout, which should be longer than this."""
    max_pdf_pages: int = 2_000
    max_zip_members: int = 2_000
    """Entries in a DOCX's zip (an ordinary document has 10 to 100)."""
    max_zip_uncompressed_bytes: int = 256 * MiB
    """Sum of the declared uncompressed sizes of a DOCX's entries (Python's zipfile never inflates an entry past its
    declared size, so this bounds what reading the document can allocate)."""
    max_zip_ratio: int = 100
    """Uncompressed / compressed size of any DOCX entry larger than 1 MiB (XML compresses 5-20x; a bomb 1000x)."""
    max_json_bytes: int = 16 * MiB
    """A JSON file's size (its parsed objects take ~10-50x the bytes in memory)."""
    max_json_depth: int = 64
    max_csv_rows: int = 500_000
    max_csv_field_chars: int = 65_536
    """Characters in one CSV field. The csv module's own process-wide limit (131,072) is left alone and caps this."""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    kind: DocumentKind
    text: str
    """NFC, ``\\n`` line ends, no control characters but tab and newline, at most one blank line in a row, no
    leading or trailing whitespace; never empty."""


class ParseError(InvalidRequest):
    """The file cannot be turned into text. ``code`` is ``unsupported_file`` or ``invalid_file`` (OpenAI's values
    for a vector-store file's ``last_error.code``); ``message`` says why in words that never quote the file.

    Ingestion records it on the file (``status: failed``); should it ever reach a route it renders as a 400."""

    code: ParseErrorCode

    def __init__(self, code: ParseErrorCode, message: str) -> None:
        super().__init__(message, code=code)

    def __reduce__(self) -> tuple[type[ParseError], tuple[ParseErrorCode, str]]:
        return (ParseError, (self.code, self.message))


def invalid(message: str) -> ParseError:
    return ParseError("invalid_file", message)


class Deadline:
    """The wall-clock budget of one document; ``check()`` fails the file once it is spent."""

    def __init__(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() >= self._until:
            raise invalid("The file took too long to parse.")


class Budget:
    """Counts the characters a parser has produced so far against ``max_output_chars``."""

    def __init__(self, limits: ParseLimits, deadline: Deadline) -> None:
        self.limit = limits.max_output_chars
        self.used = 0
        self.deadline = deadline

    def add(self, text: str) -> str:
        self.used += len(text)
        if self.used > self.limit:
            raise too_much_text(self.limit)
        self.deadline.check()
        return text


def too_much_text(limit: int) -> ParseError:
    return invalid(f"The file has more than {limit:,} characters of text.")
