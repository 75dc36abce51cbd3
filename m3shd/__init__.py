"""M3SHD: one mesh of your own machines running Claude agents."""

__version__ = "0.1.0"
