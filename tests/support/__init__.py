"""Test support: real servers (a private Dovecot, an in-process SMTP server) and the fixtures that start them."""
