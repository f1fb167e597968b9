"""Mail out: template rendering, message composition, SMTP transport and the outbox relay."""
