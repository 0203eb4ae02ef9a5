"""Persistence: models, migrations, repositories, the filter language and payload validation."""
