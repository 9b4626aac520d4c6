"""The package version, in one place (the root and the files a run writes read it)."""

__version__ = "0.1.0"
