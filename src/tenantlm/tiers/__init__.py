"""Isolation tiers: pool (shared tables) or silo (the tenant's own database), and online moves between them."""
