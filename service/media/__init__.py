"""Media: turning what clients send (data URLs today; DICOM and DICOMweb next) into
normalized RGB images an engine can take."""
