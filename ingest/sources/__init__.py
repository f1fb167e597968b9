"""Mailbox sources: where mail comes from (IMAP, Maildir). Adapters only; no business rules."""
