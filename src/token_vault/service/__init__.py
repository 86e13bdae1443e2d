"""The service: a FastAPI app for browsers and other backend services."""
