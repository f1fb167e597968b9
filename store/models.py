"""Every table of kcc-mail, declared: what the mappers, the metadata and the migrations need whole.

The tables name each other by string (relationships, foreign keys), so they are declared together before the
first query; `store.engine` imports this module, as do the migrations.
"""

from store import audit, claims, export, klantinteracties, mail, monitoring, outbox
from store.base import Base, add_length_checks

add_length_checks(Base.metadata)

__all__ = ["Base", "audit", "claims", "export", "klantinteracties", "mail", "monitoring", "outbox"]
