"""The Klantinteracties records a decision creates or changes, built inside the caller's transaction.

Nothing here commits: the use cases in kcc.usecases open the unit of work, call these, and commit once, so a
klantcontact is born together with its follow-up or not at all.
"""
