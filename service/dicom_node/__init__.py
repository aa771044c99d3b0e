"""The DICOM node (docs/pacs.md): a DIMSE SCP that receives studies into a spool,
routes complete studies by rules, reads them as study reads, sends the SR back."""
