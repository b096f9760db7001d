"""Privacy and access: who may read what, redaction, guards, the DP budget and the audit log."""
