"""Bytes to text (the decoding rule), text normalisation, and the plain-text and HTML kinds."""

from __future__ import annotations

import codecs
import re
import unicodedata
from html.parser import HTMLParser

from tenantlm.knowledge.parsing.model import Budget, ParseLimits, invalid

# Longest BOM first: UTF-32-LE's starts with UTF-16-LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Characters no text file is made of: C0 controls but tab, newlines, form feed and escape; DEL. (Random bytes are
# ~10% of these; an ASCII text in UTF-16 without a BOM ~50%, being NULs.)
_JUNK = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_MAX_JUNK_SHARE = 0.05
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Removed by normalise: C0 controls but tab and newline, DEL, C1 controls, lone surrogates (unencodable as UTF-8).
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
_TRAILING_SPACE = re.compile("[ \t]+\n")
_BLANK_LINES = re.compile("\n{3,}")


def decode(data: bytes) -> str:
    """The decoding rule for every text kind:

    1. a byte-order mark decides: UTF-8, UTF-16 (LE/BE) or UTF-32 (LE/BE); invalid sequences become U+FFFD;
    2. otherwise UTF-8 if the whole file is valid UTF-8;
    3. otherwise UTF-8 with U+FFFD for the invalid bytes if the file has at least as many valid multi-byte UTF-8
       sequences as invalid ones (UTF-8 text with a few stray bytes of another encoding);
    4. otherwise Windows-1252 (a superset of Latin-1's printable characters; its 5 unassigned bytes become U+FFFD).

    UTF-16 or UTF-32 without a BOM is not recognised (it reads as binary). Text that is more than 5% control
    characters (but tab, line breaks and escape) after decoding is not text: ``invalid_file``.
    """
    text = _decode(data)
    if text and len(text) - len(_JUNK.sub("", text)) > _MAX_JUNK_SHARE * len(text):
        raise invalid("The file does not contain readable text.")
    return text


def _decode(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    invalid_sequences = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
    if non_ascii - invalid_sequences >= invalid_sequences:
        return text
    return data.decode("cp1252", errors="replace")


def normalise(text: str) -> str:
    """NFC; ``\\n`` for every line break; no control characters but tab and newline; no trailing spaces on a line;
    at most one blank line in a row; no leading or trailing whitespace."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROLS.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def plain_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """txt and md: the decoded text as it is (Markdown's markup reads well enough to embed)."""
    return budget.add(decode(data))


# Elements whose content is not shown. (``head`` is not among them: its end tag is optional, and what it holds but
# the title is in the elements below or has no text.)
_SKIPPED = frozenset({"script", "style", "template", "noscript"})
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "summary", "table", "td", "th", "title", "tr", "ul",
})
_SPACES = re.compile(r"\s+")
_FEED_CHARS = 65_536


class _TextOfHtml(HTMLParser):
    """Visible text: no tags, comments, scripts, styles or templates; blocks on lines of their own;
    whitespace collapsed as a browser does, except inside ``pre``."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(convert_charrefs=True)
        self.budget = budget
        self.parts: list[str] = []
        self.skipping = 0
        self.in_pre = 0
        self.line_start = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        if tag == "pre":
            self.in_pre += 1
        if tag in _BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED and self.skipping:
            self.skipping -= 1
        if tag == "pre" and self.in_pre:
            self.in_pre -= 1
        if tag in _BLOCKS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if not self.in_pre:
            data = _SPACES.sub(" ", data)
            if self.line_start:
                data = data.lstrip(" ")
        if data:
            self.parts.append(self.budget.add(data))
            self.line_start = data.endswith("\n")

    def _break(self) -> None:
        if not self.line_start:
            self.parts.append("\n")
            self.line_start = True


def html_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """html: decoded by the text rule (a ``<meta charset>`` is not consulted), then its visible text."""
    text = decode(data)
    parser = _TextOfHtml(budget)
    for start in range(0, len(text), _FEED_CHARS):
        budget.deadline.check()
        parser.feed(text[start:start + _FEED_CHARS])
    parser.close()
    return "".join(parser.parts)
