"""FastAPI service: `create_app(bundle)`."""
