"""The application's use cases: each function that changes something is one transaction (`with uow:`).

Entry points (kcc.cli, kcc.web) call these and present the result; the mail code and adapters below (ingest,
replies) and the store never commit. The Klantinteracties records a decision builds are in kcc.records.
"""
