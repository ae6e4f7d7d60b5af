"""Text extraction for files attached to vector stores.

``parse_document(data, filename=..., limits=...)`` turns one file's bytes into a ``ParsedDocument`` (``kind``,
``text``) in this process; ``IsolatedParser`` runs it in a confined worker process and is what ingestion uses for
tenants' files; ``parse_isolated`` is the same for one file with a worker of its own. Nothing is written to disk
and nothing of a file's content is logged or put in an error message.

Supported kinds, by extension (case-insensitive):

====================  ==========================================================================================
``.txt`` ``.text``    the decoded text
``.md`` ``.markdown`` the decoded text, markup kept
``.html`` ``.htm``    visible text: no tags, comments, scripts, styles, templates; blocks on lines of their own
``.pdf``              pypdf's text of each page (an encrypted PDF only if the empty password opens it)
``.docx``             python-docx: body paragraphs and tables in order (not headers, footers, notes, text boxes)
``.json``             one line per scalar, ``path: value`` (``order.items[0].name: pen``)
``.csv``              one line per row, ``column: value; column: value`` named by the first row
====================  ==========================================================================================

Text kinds are decoded by one rule: a BOM decides (UTF-8, UTF-16, UTF-32); else UTF-8 if the file is valid UTF-8;
else UTF-8 with U+FFFD for stray bytes if valid multi-byte sequences are at least as many as invalid ones; else
Windows-1252. The result is normalised: NFC, ``\\n`` line ends, no control characters but tab and newline, no
trailing spaces, at most one blank line in a row, stripped.

Failures raise ``ParseError`` with ``code`` (the vector-store file's ``last_error.code``) and a ``message`` for the
tenant:

- ``unsupported_file``: an extension not listed above, or none;
- ``invalid_file``: the file is empty; its content contradicts its extension (a ``.pdf`` without ``%PDF-`` in its
  first KiB, a ``.docx`` that is not a zip, a text kind starting with a binary format's signature: PDF, zip, PNG,
  JPEG, GIF, gzip, xz, zstd, 7z, RAR, ELF, legacy Office); a text kind that is more than 5% control characters
  (binary junk, UTF-16 without a BOM); a PDF locked by a password; a malformed PDF, DOCX, JSON or CSV; no text at
  all after extraction; any limit exceeded; in ``IsolatedParser``, a worker that timed out, ran out of memory or
  died.

A worker that cannot start at all raises ``tenantlm.errors.ServiceUnavailable``: the server's fault, not the file's.

Limits (``ParseLimits``; exceeding one fails the file, nothing is truncated): input 64 MiB; output 10 M characters;
60 s of wall clock per document (checked between pages, paragraphs, rows and 64 K-character chunks of HTML); PDF
2,000 pages (plus pypdf's own stream and object limits); DOCX zip: 2,000 entries (counted before the zip is opened),
stored or deflate entries only, no encrypted entries, 256 MiB declared uncompressed in all, any entry over 1 MiB at
most 100x its compressed size; JSON 16 MiB and 64 levels of nesting; CSV 500,000 rows and 65,536 characters a field.
``IsolatedParser`` adds a hard timeout (120 s by default, meant to exceed ``max_seconds``) and an address-space cap
of 1 GiB on its worker (``RLIMIT_AS``), core dumps off. It costs ~0.4 ms a file over parse_document once its worker
runs, and ~0.5-1 s to start a worker (on the first file, after a failure, every 100 files).
"""

from tenantlm.knowledge.parsing.document import parse_document
from tenantlm.knowledge.parsing.isolated import IsolatedParser, ParseFunction, parse_isolated
from tenantlm.knowledge.parsing.model import DocumentKind, ParsedDocument, ParseError, ParseErrorCode, ParseLimits

__all__ = [
    "DocumentKind",
    "IsolatedParser",
    "ParseError",
    "ParseErrorCode",
    "ParseFunction",
    "ParseLimits",
    "ParsedDocument",
    "parse_document",
    "parse_isolated",
]
