"""A ``multipart/form-data`` upload read as it arrives: the form's small fields into memory (bounded), the one file
part handed on in pieces, so its bytes are sealed as they come and never wait, in the clear, in memory or in a
temporary file (Starlette's own form parser spools large parts to disk).

    form = await read_upload(content_type, body_chunks, on_file=sink)   # sink(piece) is awaited for each piece

``on_file`` is called with ``None`` once when the file part's headers are complete (with ``form.filename`` set and
the fields sent before it), then with each piece of its content. A second file part, a field over
``MAX_FIELD_BYTES``, too many fields or a malformed body are a 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from tenantlm.errors import InvalidRequest

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32
FILE_FIELD = "file"

FileSink = Callable[[bytes | None], Awaitable[None]]


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _Reader:
    """The parser's callbacks (synchronous) collect into ``pending``; ``read_upload`` awaits the sink after each
    write, so at most one network read's worth of the file is held at a time."""

    def __init__(self, form: UploadForm) -> None:
        self.form = form
        self.part = _Part()
        self.pending: list[bytes | None] = []
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.files = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition"))
        name = options.get(b"name")
        if name is None:
            raise InvalidRequest("a form part has no name in its Content-Disposition header")
        self.part.name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            if self.part.name != FILE_FIELD or self.files:
                raise InvalidRequest("send exactly one file, in the form field 'file'", param=FILE_FIELD)
            self.files += 1
            self.part.is_file = True
            self.form.filename = filename.decode("utf-8", "replace")
            self.pending.append(None)
        elif len(self.form.fields) >= MAX_FIELDS:
            raise InvalidRequest(f"the form has more than {MAX_FIELDS} fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.pending.append(data[start:end])
            self.form.file_bytes += end - start
            return
        self.part.value += data[start:end]
        if len(self.part.value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"the form field {self.part.name!r} is longer than {MAX_FIELD_BYTES} bytes",
                                 param=self.part.name)

    def on_part_end(self) -> None:
        if not self.part.is_file:
            self.form.fields[self.part.name] = self.part.value.decode("utf-8", "replace")


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the file as multipart/form-data (Content-Type: multipart/form-data; boundary=...)")
    return boundary


async def read_upload(content_type: str | None, body: AsyncIterator[bytes], *, on_file: FileSink,
                      form: UploadForm | None = None) -> UploadForm:
    """Parse the whole body into ``form`` (a new one unless given); every piece of the file goes to ``on_file`` as
    it arrives (see the module's doc)."""
    form = form if form is not None else UploadForm()
    reader = _Reader(form)
    parser = MultipartParser(boundary_of(content_type), reader.callbacks())  # type: ignore[arg-type]
    async for chunk in body:
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"the multipart body is malformed: {exc}") from None
        pending, reader.pending = reader.pending, []
        for piece in pending:
            await on_file(piece)
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"the multipart body is malformed: {exc}") from None
    if parser.state != MultipartState.END:
        raise InvalidRequest("the multipart body ended before its closing boundary")
    if reader.files == 0:
        raise InvalidRequest("the form has no file: send it in the form field 'file'", param=FILE_FIELD)
    return form
