"""Long-term memory per end user: facts about one end user of one tenant, sealed, searched, injected into a turn.

- ``models``: :class:`Memory` and the tenant setting ``memory`` (``{"policy", "long_term"}``).
- ``extract``: the rule-based fact extractor (statements like "my name is ...", "I live in ...").
- ``store``: :class:`MemoryStore`, the rows over SQL (tenant AND end user in every query).
- ``service``: :class:`LongTermMemory`: remember, recall (dense + lexical, fused), list, delete, erase, export.
"""
