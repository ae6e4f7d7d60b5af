"""Bad and hostile files fail with ``unsupported_file`` or ``invalid_file`` and a message that never quotes them;
every limit in ParseLimits holds for every kind it concerns."""

from __future__ import annotations

import io
import json
import pickle
import random
import zipfile

import pytest
from parsing_samples import docx_file, pdf, read_entry, replacing, with_declared_size, with_entries, zip_of

from tenantlm.knowledge.parsing import ParseError, ParseLimits, parse_document

MARKER = "TENANT-SECRET-7f3a"
MiB = 1024 * 1024


def failure(data: bytes, filename: str, limits: ParseLimits = ParseLimits()) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_document(data, filename=filename, limits=limits)
    assert MARKER not in caught.value.message and MARKER not in str(caught.value)
    return caught.value


def invalid(data: bytes, filename: str, limits: ParseLimits = ParseLimits()) -> str:
    error = failure(data, filename, limits)
    assert error.code == "invalid_file"
    assert error.status == 400 and error.body()["error"]["code"] == "invalid_file"
    return error.message


def samples() -> dict[str, bytes]:
    text = f"Some text {MARKER}".encode()
    return {
        "txt": text, "md": text, "html": b"<p>" + text + b"</p>", "json": json.dumps({"k": MARKER}).encode(),
        "csv": b"h\n" + text, "pdf": pdf(f"Some text {MARKER}"), "docx": docx_file(f"Some text {MARKER}"),
    }


@pytest.mark.parametrize("filename", ["program.exe", "image.png", "archive.tar.gz", "noextension", "a.doc",
                                      "a.pdf.exe", "weird.\u00e9\u00e9", "C:\\dir.pdf\\name"])
def test_an_unsupported_extension_is_unsupported_file(filename: str) -> None:
    error = failure(MARKER.encode(), filename)
    assert error.code == "unsupported_file"
    assert "not supported" in error.message


def test_unsupported_is_decided_before_size_or_content() -> None:
    assert failure(b"", "empty.exe").code == "unsupported_file"
    assert failure(b"x" * 11, "big.exe", ParseLimits(max_input_bytes=10)).code == "unsupported_file"


@pytest.mark.parametrize("kind", ["txt", "md", "html", "pdf", "docx", "json", "csv"])
def test_zero_bytes_is_invalid_file(kind: str) -> None:
    assert invalid(b"", f"empty.{kind}") == "The file is empty."


@pytest.mark.parametrize("kind", ["txt", "md", "html", "pdf", "docx", "json", "csv"])
def test_input_larger_than_the_limit_is_invalid_file(kind: str) -> None:
    data = samples()[kind]
    assert "larger than" in invalid(data, f"f.{kind}", ParseLimits(max_input_bytes=len(data) - 1))
    assert parse_document(data, filename=f"f.{kind}", limits=ParseLimits(max_input_bytes=len(data))).kind == kind


@pytest.mark.parametrize(("content", "filename", "says"), [
    ("pdf", "report.txt", "a PDF document"),
    ("docx", "memo.md", "a zip archive"),
    ("pdf", "page.html", "a PDF document"),
    ("docx", "data.json", "a zip archive"),
    ("pdf", "rows.csv", "a PDF document"),
    ("docx", "report.pdf", "not a PDF"),
    ("txt", "report.pdf", "not a PDF"),
    ("pdf", "memo.docx", "not a DOCX"),
    ("txt", "memo.docx", "not a DOCX"),
    ("html", "memo.docx", "not a DOCX"),
])
def test_content_that_contradicts_the_extension_is_invalid_file(content: str, filename: str, says: str) -> None:
    assert says in invalid(samples()[content], filename)


@pytest.mark.parametrize(("magic", "says"), [
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff\xe0", "JPEG"), (b"GIF89a", "GIF"), (b"\x1f\x8b\x08", "gzip"),
    (b"\x7fELF\x02\x01", "executable"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office"),
])
def test_a_binary_format_under_a_text_extension_is_invalid_file(magic: bytes, says: str) -> None:
    assert says in invalid(magic + MARKER.encode() * 10, "notes.txt")


@pytest.mark.parametrize("kind", ["txt", "md", "html", "json", "csv"])
def test_binary_junk_under_a_text_extension_is_invalid_file(kind: str) -> None:
    junk = random.Random(7).randbytes(4096)
    assert invalid(junk, f"junk.{kind}") == "The file does not contain readable text."


def test_utf16_without_a_bom_reads_as_binary() -> None:
    assert invalid(f"Some text {MARKER}".encode("utf-16-le"), "a.txt") == "The file does not contain readable text."


def test_a_few_control_characters_are_dropped_not_fatal() -> None:
    assert parse_document(b"one\x00two\x1bthree" + b" words" * 10, filename="a.txt").text.startswith("onetwothree")


def test_malformed_pdfs_are_invalid_file() -> None:
    good = pdf(f"Some text {MARKER}", "page two")
    for cut in (0.2, 0.5, 0.8, 0.95):
        assert invalid(good[:int(len(good) * cut)], "cut.pdf") == "The file is not a readable PDF document."
    assert invalid(b"%PDF-1.7\n" + random.Random(1).randbytes(8192), "garbage.pdf") == (
        "The file is not a readable PDF document.")
    assert invalid(b"%PDF-1.4\n" + MARKER.encode() + b"\n%%EOF\n", "header-only.pdf") == (
        "The file is not a readable PDF document.")


def test_a_password_protected_pdf_is_invalid_file() -> None:
    data = pdf(f"Some text {MARKER}", user_password="open sesame")
    assert invalid(data, "locked.pdf") == "The PDF is protected by a password."


def test_pdf_page_limit() -> None:
    data = pdf("one", "two", "three")
    assert "more than 2 pages" in invalid(data, "long.pdf", ParseLimits(max_pdf_pages=2))
    assert parse_document(data, filename="long.pdf", limits=ParseLimits(max_pdf_pages=3)).text == (
        "one\n\ntwo\n\nthree")


def test_a_zip_that_is_not_a_word_document_is_invalid_file() -> None:
    assert "not a readable DOCX" in invalid(zip_of({"hello.txt": MARKER.encode()}), "plain-zip.docx")
    spreadsheet = zip_of({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    assert "not a readable DOCX" in invalid(spreadsheet, "book.docx")
    assert "damaged zip" in invalid(docx_file("text")[:-100], "cut.docx")


def test_a_zip_bomb_entry_is_refused_before_it_is_inflated() -> None:
    bomb = with_entries(docx_file("text"), {"word/media/bomb.bin": bytes(20 * MiB)})
    assert len(bomb) < 200_000
    assert "compressed suspiciously well" in invalid(bomb, "bomb.docx")


def test_the_total_declared_size_is_bounded() -> None:
    noise = random.Random(3).randbytes(2 * MiB)  # incompressible: no ratio alarm, only the size
    big = with_entries(docx_file("text"), {"word/media/a.bin": noise, "word/media/b.bin": noise})
    assert "inflates to more than" in invalid(big, "big.docx", ParseLimits(max_zip_uncompressed_bytes=4 * MiB))
    assert parse_document(big, filename="big.docx", limits=ParseLimits(max_zip_uncompressed_bytes=5 * MiB)).text == (
        "text")


def test_a_declared_size_is_a_ceiling_not_a_hint() -> None:
    """A zip whose directory says document.xml is tiny while its data inflates to more: Python's zipfile stops at
    the declared size, the CRC no longer matches, the file fails (nothing past the declared size is allocated)."""
    honest = docx_file(f"Some text {MARKER}" * 50)
    with zipfile.ZipFile(io.BytesIO(honest)) as archive:
        assert archive.getinfo("word/document.xml").file_size > 1000
    liar = with_declared_size(honest, "word/document.xml", 100)
    assert invalid(liar, "liar.docx") == "The file is not a readable DOCX document."


def _with_document_xml(prolog: str, body_text: str) -> bytes:
    """A DOCX whose document.xml gets ``prolog`` after its XML declaration and ``body_text`` for its one run."""
    base = docx_file("PLACEHOLDER")
    xml = read_entry(base, "word/document.xml").decode()
    xml = xml.replace("?>", "?>" + prolog, 1).replace("PLACEHOLDER", body_text)
    return replacing(base, "word/document.xml", xml.encode())


def test_an_xml_entity_bomb_in_a_docx_is_not_expanded() -> None:
    entities = "".join(f'<!ENTITY e{n + 1} "{f"&e{n};" * 10}">' for n in range(9))
    bomb = _with_document_xml(f'<!DOCTYPE w:document [<!ENTITY e0 "lol">{entities}]>', "&e9;")
    assert invalid(bomb, "laughs.docx") == "The file is not a readable DOCX document."


def test_an_external_entity_in_a_docx_is_not_fetched() -> None:
    xxe = _with_document_xml('<!DOCTYPE w:document [<!ENTITY x SYSTEM "file:///etc/hostname">]>', "&x;")
    assert invalid(xxe, "xxe.docx") == "The file contains no text."


def test_too_many_zip_entries_are_refused() -> None:
    crowded = with_entries(docx_file("text"), {f"word/media/{n}.bin": b"" for n in range(2_001)})
    assert "more than 2,000 parts" in invalid(crowded, "crowded.docx")
    assert "more than 10 parts" in invalid(docx_file("text"), "small.docx", ParseLimits(max_zip_members=10))


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressions_other_than_deflate_are_refused(compression: int) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_file("text"))) as source, zipfile.ZipFile(archive, "w", compression) as out:
        for entry in source.infolist():
            out.writestr(entry.filename, source.read(entry))
    assert "unsupported compression" in invalid(archive.getvalue(), "odd.docx")


def test_json_nesting_is_bounded() -> None:
    assert invalid(b"[" * 100_000 + b"]" * 100_000, "deep.json") == "The file is not valid JSON."
    deep = b'{"a":' * 65 + b'"x"' + b"}" * 65
    assert invalid(deep, "deep.json") == "The JSON is nested deeper than 64 levels."
    assert parse_document(deep, filename="deep.json", limits=ParseLimits(max_json_depth=65)).text == (
        ".".join("a" * 65) + ": x")


def test_malformed_json_is_invalid_file() -> None:
    for bad in (b'{"k": "' + MARKER.encode() + b'"', b"{'single': 1}", b"[1, 2,]", b"1" * 5000):
        assert invalid(bad, "bad.json") == "The file is not valid JSON."


def test_json_size_limit() -> None:
    data = json.dumps({"k": "v" * 100}).encode()
    assert "larger than" in invalid(data, "a.json", ParseLimits(max_json_bytes=len(data) - 1))


def test_a_giant_csv_field_is_refused() -> None:
    giant = b"h1,h2\nshort," + b"x" * 200_000 + b"\n"
    assert "longer than 65,536" in invalid(giant, "giant.csv")
    over_our_limit = b"h1,h2\nshort," + b"x" * 70_000 + b"\n"
    assert "longer than 65,536" in invalid(over_our_limit, "big.csv")
    unterminated = b'h1,h2\n"never closed' + b"y" * 200_000
    assert "malformed" in invalid(unterminated, "open.csv")


def test_csv_row_limit() -> None:
    data = b"h\n" + b"row\n" * 11
    assert "more than 10 rows" in invalid(data, "rows.csv", ParseLimits(max_csv_rows=10))
    assert parse_document(data, filename="rows.csv", limits=ParseLimits(max_csv_rows=11)).text.count("\n") == 10


@pytest.mark.parametrize("kind", ["txt", "md", "html", "pdf", "docx", "json", "csv"])
def test_output_limit_holds_for_every_kind(kind: str) -> None:
    assert "more than 10 characters of text" in invalid(samples()[kind], f"a.{kind}",
                                                        ParseLimits(max_output_chars=10))


@pytest.mark.parametrize("kind", ["txt", "md", "html", "pdf", "docx", "json", "csv"])
def test_the_wall_clock_budget_is_checked_by_every_kind(kind: str) -> None:
    assert invalid(samples()[kind], f"a.{kind}", ParseLimits(max_seconds=0)) == "The file took too long to parse."


def test_the_error_survives_pickling_and_renders_as_a_400() -> None:
    error = ParseError("unsupported_file", "Files of this type are not supported.")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.code, copy.message, copy.status) == ("unsupported_file", error.message, 400)
    assert copy.body() == {"error": {"message": error.message, "type": "invalid_request_error", "param": None,
                                     "code": "unsupported_file"}}
