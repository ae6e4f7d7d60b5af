"""DOCX: the zip is checked against the limits before anything is inflated, then python-docx reads the body's
paragraphs and tables in document order."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import docx
from docx.document import Document
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from tenantlm.knowledge.parsing.model import Budget, ParseError, ParseLimits, invalid

_CENTRAL_DIRECTORY_ENTRY = b"PK\x01\x02"
_RATIO_FLOOR = 1024 * 1024
_COMPRESSIONS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


def docx_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """Paragraphs one per line; a table row one line, its cells joined by `` | `` (a merged cell once), nested
    tables inline. Headers, footers, footnotes, comments and text boxes are not read."""
    check_zip(data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
        return "\n".join(budget.add(block) for block in _blocks(document))
    except (ParseError, MemoryError):
        raise
    except Exception:
        raise invalid("The file is not a readable DOCX document.") from None


def check_zip(data: bytes, limits: ParseLimits) -> None:
    """Zip-bomb defences, from the central directory alone: entry count (counted in the raw bytes before zipfile
    builds an object per entry), compression methods (stored and deflate only: Python's zipfile then never inflates
    an entry past its declared size, and a CRC check catches a lie), encrypted entries, the total declared size and
    the compression ratio of every entry over 1 MiB."""
    if data.count(_CENTRAL_DIRECTORY_ENTRY) > limits.max_zip_members:
        raise _too_many(limits)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        raise invalid("The file is not a valid DOCX document (a damaged zip).") from None
    if len(entries) > limits.max_zip_members:
        raise _too_many(limits)
    total = 0
    for entry in entries:
        if entry.compress_type not in _COMPRESSIONS or entry.flag_bits & 0x1:
            raise invalid("The DOCX document uses an unsupported compression or encryption.")
        total += entry.file_size
        if entry.file_size > _RATIO_FLOOR and entry.file_size > limits.max_zip_ratio * max(entry.compress_size, 1):
            raise invalid("The DOCX document is compressed suspiciously well (a zip bomb?).")
    if total > limits.max_zip_uncompressed_bytes:
        raise invalid(f"The DOCX document inflates to more than {limits.max_zip_uncompressed_bytes:,} bytes.")


def _too_many(limits: ParseLimits) -> ParseError:
    return invalid(f"The DOCX document has more than {limits.max_zip_members:,} parts.")


def _blocks(container: Document | _Cell) -> Iterator[str]:
    for item in container.iter_inner_content():
        if isinstance(item, Paragraph):
            yield item.text
        else:
            yield from _rows(item)


def _rows(table: Table) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell appears once per grid column it spans
                continue
            previous = cell._tc
            cells.append(" ".join(" ".join(_blocks(cell)).split()))
        yield " | ".join(cells)
