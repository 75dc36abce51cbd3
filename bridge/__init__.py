"""The iMessage bridge: chat.db in, Commander API calls, Messages replies out (see README.md here).

It imports `m3shd` only, never `commander` or `n0d3`: it is an API client like any other.
"""
