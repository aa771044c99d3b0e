"""DICOM study reads, the whole lifecycle, for every door (the HTTP API, the DICOM
node): the read and its statuses (`model`), where reads are kept (`store`), admitting
and ending them (`service`), one run (`runner`: `selection`, `sr`), the webhook, and
the operator client (`client`)."""
