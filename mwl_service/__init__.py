"""DICOM Modality Worklist / MPPS service and the worklist database schema."""
