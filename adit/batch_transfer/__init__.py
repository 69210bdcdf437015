"""Batch transfer (in the making): studies named in a spreadsheet, checked against the PACS,
then transferred with the core's pipeline. Not yet an installed app: so far it has the reading
of its batch files."""
