"""Storage locations: where tenant content may live, one database per region.

The home location is the deployment's own database (``database_url``, region ``storage_region``): it keeps the
control plane (tenants, keys, limits, wrapped data keys, audit, the usage and storage ledgers) and the content of the
tenants placed there. Each configured ``storage_locations`` entry adds a database in another region; a tenant whose
``storage_region`` names it has its content there (files and their sealed parts, vector stores and their chunks,
stored responses, conversations, memories, the request log), in that location's pool or in a silo of that location
(SQLite: ``<directory of its file>/tenants/<id>/tenant.db``; Postgres: a ``silo_<id>`` schema of its database).

A location's database carries the full schema (migrated at start like the home one) and a copy of each of its
tenants' rows in ``tenants`` (the anchor its content's foreign keys point at; the home row stays authoritative).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tenantlm.errors import InvalidRequest
from tenantlm.settings import Settings, StorageLocation
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import check_app_role, migrate
from tenantlm.tiers.silos import PostgresSchemaSilos, Silos, SqliteSilos


@dataclass
class Location:
    region: str | None  # None: the home database of a deployment that does not tag its storage
    pool: Database
    silos: Silos
    home: bool
    config: StorageLocation | None = None  # how to reach it (None: the home database)


def _sqlite_dir(url: str) -> Path:
    database = sa.engine.make_url(url).database
    if not database:
        raise ValueError(f"storage location {url!r}: a SQLite location needs a file path")
    return Path(database).expanduser().resolve().parent


def location_silos(config: StorageLocation) -> Silos:
    if config.database_url.startswith("postgresql"):
        return PostgresSchemaSilos(url=config.database_url, migrate_url=config.database_migrate_url)
    return SqliteSilos(_sqlite_dir(config.database_url))


class Locations:
    """The home location and the others, by region."""

    def __init__(self, home: Location, others: Sequence[Location] = ()) -> None:
        self.home = home
        self.others = list(others)
        self._by_region = {loc.region: loc for loc in [home, *self.others]}

    @classmethod
    def from_settings(cls, settings: Settings, *, home_pool: Database, home_silos: Silos) -> Locations:
        others = [Location(region=cfg.region, pool=Database.from_url(cfg.database_url), silos=location_silos(cfg),
                           home=False, config=cfg) for cfg in settings.storage_locations]
        return cls(Location(region=settings.storage_region, pool=home_pool, silos=home_silos, home=True), others)

    @property
    def regions(self) -> list[str]:
        return [loc.region for loc in [self.home, *self.others] if loc.region is not None]

    def get(self, region: str | None) -> Location:
        """The location of ``region`` (None: home); an unknown region is a 400 naming the configured ones."""
        if region is None:
            return self.home
        loc = self._by_region.get(region)
        if loc is None:
            raise InvalidRequest(f"no storage location in region {region!r}; configured: "
                                 f"{', '.join(self.regions) or 'none (set TENANTLM_STORAGE_REGION)'}",
                                 param="storage_region")
        return loc

    def stored_region(self, region: str | None) -> str | None:
        """What the tenant row records: None for the home location, else the region."""
        return None if self.get(region).home else region

    def for_new_tenant(self, allowed_regions: list[str] | None) -> str | None:
        """Where a new tenant's content goes: home unless its allowed regions exclude it, then the first location
        (in configuration order) inside them; None (home) when none is (the residency check refuses that)."""
        if allowed_regions is None or self.home.region is None or self.home.region in allowed_regions:
            return None
        for loc in self.others:
            if loc.region in allowed_regions:
                return loc.region
        return None

    async def prepare(self) -> None:
        """At start: create the SQLite locations' directories, bring every other location's schema to head (as the
        home one's was), and check the server's role there may not bypass row-level security."""
        for loc in self.others:
            assert loc.config is not None
            if not loc.config.database_url.startswith("postgresql"):
                await asyncio.to_thread(_sqlite_dir(loc.config.database_url).mkdir, parents=True, exist_ok=True)
            await migrate(url=loc.config.database_url, migrate_url=loc.config.database_migrate_url)
            await check_app_role(loc.pool.engine)

    async def dispose(self) -> None:
        for loc in self.others:
            await loc.pool.dispose()
