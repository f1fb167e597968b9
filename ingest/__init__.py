"""Mail in: mailbox sources, parsing, classification, intake."""
