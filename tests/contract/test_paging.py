"""``tenant_pages`` walks every row of one tenant across page boundaries, in key order (one key or two), and never
a row of another tenant (SQLite and Postgres)."""

from __future__ import annotations

from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.paging import tenant_pages
from tenantlm.storage.sql.tables import memories, tenants

A, B = "ten_pages_a", "ten_pages_b"


async def _seed(database: Database) -> None:
    for tid, count in ((A, 23), (B, 5)):
        async with database.tenant_tx(tenant_id=tid) as conn:
            await conn.execute(tenants.insert().values(id=tid, name=tid, status="active", plan="free", region="local",
                                                       metadata={}, settings={}, model_aliases={}, created_at=0.0,
                                                       updated_at=0.0))
            await conn.execute(memories.insert(), [
                {"tenant_id": tid, "end_user": f"u{n % 3}", "id": f"m{n:02d}", "created_at": float(n),
                 "source": None, "sealed_text": b"x", "sealed_vector": None} for n in range(count)])


async def test_pages_cover_the_tenant_in_key_order(database: Database) -> None:
    await _seed(database)
    pages = [page async for page in tenant_pages(database, memories, tenant_id=A, page=4, keys=("end_user", "id"),
                                                 convert=lambda r: (r.tenant_id, r.end_user, r.id))]
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 3]
    rows = [row for page in pages for row in page]
    assert rows == sorted((A, f"u{n % 3}", f"m{n:02d}") for n in range(23))
    by_id = [row async for page in tenant_pages(database, memories, tenant_id=B, page=5, keys=("id",),
                                                convert=lambda r: r.id) for row in page]
    assert by_id == [f"m{n:02d}" for n in range(5)]  # a full last page ends with one more, empty read
