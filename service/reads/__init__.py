"""DICOM study reads: the read record, where reads are kept, and the operator client."""
