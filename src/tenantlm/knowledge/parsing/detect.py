"""Which kind a file is: its extension says what it claims to be, its first bytes whether that is true."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tenantlm.knowledge.parsing.model import DocumentKind, ParseError, invalid

EXTENSIONS: dict[str, DocumentKind] = {
    ".txt": "txt", ".text": "txt",
    ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".json": "json",
    ".csv": "csv",
}

# Signatures of binary formats: a text kind starting with one of these is not text. A .pdf may have up to 1 KiB of
# junk before its header (readers accept that).
_PDF = b"%PDF-"
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_PDF, "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "gzip data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office document"),
)
_SAFE_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")


def kind_from_name(filename: str) -> DocumentKind:
    """The kind the file's extension names (case-insensitive), or ``unsupported_file``."""
    extension = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    kind = EXTENSIONS.get(extension)
    if kind is None:
        named = f"type {extension}" if _SAFE_EXTENSION.fullmatch(extension) else "this type"
        supported = ", ".join(sorted(EXTENSIONS))
        raise ParseError("unsupported_file", f"Files of {named} are not supported (supported: {supported}).")
    return kind


def detect_kind(data: bytes, *, filename: str) -> DocumentKind:
    """The extension's kind when the content agrees with it; ``invalid_file`` when the file is empty or its first
    bytes say it is something else."""
    kind = kind_from_name(filename)
    if not data:
        raise invalid("The file is empty.")
    if kind == "pdf":
        if _PDF not in data[:1024]:
            raise invalid("The file is not a PDF document.")
    elif kind == "docx":
        if binary_format(data) != "a zip archive":
            raise invalid("The file is not a DOCX document.")
    elif (found := binary_format(data)) is not None:
        raise invalid(f"The file's content is {found}, not {kind} text.")
    return kind


def binary_format(data: bytes) -> str | None:
    """The binary format ``data`` starts with, in words, or None."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None
