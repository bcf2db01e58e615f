"""The HTTP API (FastAPI) and the server-rendered thread view; see app.create_app."""
