"""PDF: the text pypdf extracts from each page, pages separated by a blank line."""

from __future__ import annotations

import io

from pypdf import PasswordType, PdfReader

from tenantlm.knowledge.parsing.model import Budget, ParseError, ParseLimits, invalid


def pdf_text(data: bytes, limits: ParseLimits, budget: Budget) -> str:
    """An encrypted PDF is read only if the empty password opens it (a PDF locked against editing but not against
    reading). pypdf's own limits (``pypdf.Configuration``: decompressed stream sizes, array and dictionary sizes)
    apply as well. Any failure inside pypdf is ``invalid_file``; no message of pypdf's reaches the tenant."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise invalid("The PDF is protected by a password.")
        pages = reader.pages
        if len(pages) > limits.max_pdf_pages:
            raise invalid(f"The PDF has more than {limits.max_pdf_pages:,} pages.")
        texts = []
        for page in pages:
            budget.deadline.check()
            texts.append(budget.add(page.extract_text()))
    except (ParseError, MemoryError):
        raise
    except Exception:
        raise invalid("The file is not a readable PDF document.") from None
    return "\n\n".join(texts)
