"""Batch transfer: the studies a spreadsheet names, checked at the source, then transferred
with the core's pipeline under stable pseudonyms."""
