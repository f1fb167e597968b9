"""HTTP adapters for the municipality's registers (Open Klant's Klantinteracties API); no business rules here."""
