"""Schemathesis against the served OpenAPI document (tests/integration/test_api_fuzz.py)."""
