"""A minimal Django project serving django-oauth-toolkit as a test OpenID provider."""
