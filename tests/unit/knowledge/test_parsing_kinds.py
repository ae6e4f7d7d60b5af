"""Every supported kind gives back the text it was built with; the decoding rule; normalisation."""

from __future__ import annotations

import codecs
import json
import unicodedata

import pytest
from parsing_samples import docx_file, pdf

from tenantlm.knowledge.parsing import ParsedDocument, ParseError, parse_document
from tenantlm.knowledge.parsing.text import normalise


def test_txt_and_md_round_trip() -> None:
    assert parse_document(b"Hello, world.\nSecond line.", filename="notes.txt") == ParsedDocument(
        kind="txt", text="Hello, world.\nSecond line.")
    markdown = "# Title\n\n- item *one*\n- item two"
    assert parse_document(markdown.encode(), filename="README.MD") == ParsedDocument(kind="md", text=markdown)
    assert parse_document(b"plain", filename="a.text").kind == "txt"
    assert parse_document(b"plain", filename="a.markdown").kind == "md"


def test_html_keeps_visible_text_only() -> None:
    page = (
        "<!doctype html><html><head><title>The title</title><style>p { color: red }</style>"
        "<script>var secret = 1;</script><meta charset='utf-8'></head><body>"
        "<h1>Heading</h1><p>Some   <b>bold</b>\n text &amp; an entity &eacute;.</p><!-- a comment -->"
        "<ul><li>one</li><li>two</li></ul><template><p>never shown</p></template>"
        "<pre>  indented\n    code</pre><noscript>enable js</noscript>"
        "<table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    document = parse_document(page.encode(), filename="page.htm")
    assert document.kind == "html"
    assert document.text == "The title\nHeading\nSome bold text & an entity é.\none\ntwo\n  indented\n    code\na\nb"


def test_html_without_closing_head_or_body_still_has_its_text() -> None:
    document = parse_document(b"<html><head><title>T</title><p>body text", filename="a.html")
    assert document.text == "T\nbody text"


def test_json_renders_paths_and_values() -> None:
    value = {"order": {"id": 7, "items": [{"name": "pen", "qty": 2}, {"name": "ink"}], "paid": True,
                       "note": None, "empty": {}}, "tags": ["a", "b"], "price": 1.5}
    document = parse_document(json.dumps(value).encode(), filename="order.json")
    assert document == ParsedDocument(kind="json", text="\n".join([
        "order.id: 7", "order.items[0].name: pen", "order.items[0].qty: 2", "order.items[1].name: ink",
        "order.paid: true", "order.note: null", "tags[0]: a", "tags[1]: b", "price: 1.5",
    ]))


def test_json_top_level_scalar_and_array() -> None:
    assert parse_document(b'"just a string"', filename="a.json").text == "just a string"
    assert parse_document(b'[{"a": 1}, 2]', filename="a.json").text == "[0].a: 1\n[1]: 2"


@pytest.mark.parametrize(("delimiter", "name"), [(",", "comma"), (";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_csv_rows_are_named_by_the_header(delimiter: str, name: str) -> None:
    rows = [["name", "city", "note"], ["Alice", "Paris", ""], ["Bob", "Lyon", "two\nlines"], [], ["Eve"]]
    data = "\r\n".join(delimiter.join(f'"{cell}"' if "\n" in cell else cell for cell in row) for row in rows)
    document = parse_document(data.encode(), filename=f"{name}.csv")
    assert document == ParsedDocument(kind="csv", text=(
        "name: Alice; city: Paris\nname: Bob; city: Lyon; note: two lines\nname: Eve"))


def test_csv_cells_past_the_header_are_numbered() -> None:
    assert parse_document(b"a,\n1,2,3", filename="x.csv").text == "a: 1; column 2: 2; column 3: 3"


def test_pdf_round_trips_page_by_page() -> None:
    document = parse_document(pdf("First page (one)", "Second page \\ two"), filename="report.PDF")
    assert document == ParsedDocument(kind="pdf", text="First page (one)\n\nSecond page \\ two")


def test_pdf_with_junk_before_its_header_is_read() -> None:
    assert parse_document(b"junk before the header\n" + pdf("after the junk"), filename="a.pdf").text == (
        "after the junk")


def test_text_that_mentions_a_signature_is_still_text() -> None:
    text = "A PDF starts with %PDF- and a zip with PK."
    assert parse_document(text.encode(), filename="formats.md").text == text


def test_pdf_encrypted_with_an_empty_user_password_is_read() -> None:
    data = pdf("Readable by anyone", user_password="", owner_password="owner-only")
    assert parse_document(data, filename="locked-for-editing.pdf").text == "Readable by anyone"


def test_docx_round_trips_paragraphs_and_tables_in_order() -> None:
    data = docx_file("First paragraph.", "Second paragraph.", table=[["Name", "Role"], ["Ada", "Engineer"]])
    document = parse_document(data, filename="memo.docx")
    assert document == ParsedDocument(
        kind="docx", text="First paragraph.\nSecond paragraph.\nName | Role\nAda | Engineer")


@pytest.mark.parametrize(("bom", "encoding"), [
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
])
def test_a_bom_decides_the_encoding(bom: bytes, encoding: str) -> None:
    text = "Grüße, 世界 — ½ €"
    assert parse_document(bom + text.encode(encoding), filename="a.txt").text == text


def test_text_without_bom_is_utf8_or_else_windows_1252() -> None:
    assert parse_document("naïve café €".encode(), filename="a.txt").text == "naïve café €"
    assert parse_document("naïve café €".encode("cp1252"), filename="a.txt").text == "naïve café €"


def test_mostly_utf8_with_a_stray_byte_keeps_the_utf8() -> None:
    mixed = "café crème ".encode() + "naïve".encode("cp1252")
    assert parse_document(mixed, filename="a.md").text == "café crème na\ufffdve"


def test_normalisation() -> None:
    raw = "  e\u0301t\u00e9\x00 \r\nline\rtwo\x0cthree \t \n\n\n\n\nend\x07\u2028\x85x  "
    assert normalise(raw) == "été\nline\ntwo\nthree\n\nend\n\nx"
    assert normalise("lone \ud800surrogate\x9f") == "lone surrogate"
    document = parse_document(raw.encode("utf-16"), filename="a.txt")
    assert document.text == "été\nline\ntwo\nthree\n\nend\n\nx"
    assert unicodedata.is_normalized("NFC", document.text)


@pytest.mark.parametrize("filename", ["blank.txt", "blank.md", "blank.html", "blank.json", "blank.csv"])
def test_a_file_with_no_text_is_invalid(filename: str) -> None:
    blank = {"blank.html": b"<html><script>x()</script></html>", "blank.json": b"{}", "blank.csv": b"a,b\n,"}
    with pytest.raises(ParseError) as caught:
        parse_document(blank.get(filename, b" \n\t \r\n"), filename=filename)
    assert (caught.value.code, caught.value.message) == ("invalid_file", "The file contains no text.")


def test_pdf_without_text_is_invalid() -> None:
    with pytest.raises(ParseError, match="no text") as caught:
        parse_document(pdf(""), filename="scan.pdf")
    assert caught.value.code == "invalid_file"
