"""Per-tenant knowledge: files, parsing, chunking, embedding, the vector and lexical indexes, hybrid search, vector
stores and their ingestion."""
