"""Reserved package: filled by its own issue."""
