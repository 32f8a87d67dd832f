"""An order service on FastAPI with statesaga: see app.py."""
