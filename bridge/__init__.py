"""The iMessage bridge (arrives with its own issue)."""
