"""The pure core: plain functions over plain data, importing only the standard library."""
