"""One module per screen; each exposes `routes()`."""
