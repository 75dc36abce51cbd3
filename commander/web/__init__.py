"""The dashboard: HTML pages for people, served by the Commander beside its API."""
