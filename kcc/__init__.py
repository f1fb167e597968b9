"""kcc-mail: the application (configuration, review use cases, CLI, service runner)."""
