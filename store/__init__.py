"""Persistence only: tables, engine and sessions, the unit of work, blobs and migrations.

Importing the package loads no table: a parse worker needs only `store.values` and `store.states`, without
SQLAlchemy. `store.models` declares every table; the engine imports it, so every session sees all of them.
"""
