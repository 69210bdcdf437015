"""The DICOM explorer: what a PACS holds, patient by patient, study by study, series by series,
with previews; asked live, within a few seconds, through the core's DICOM operator."""
