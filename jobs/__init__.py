"""Command-line jobs (`recsys …`)."""
