"""The plugins that come with m3shd (entry points in pyproject.toml): notify, and web
(web_search and fetch_url)."""
