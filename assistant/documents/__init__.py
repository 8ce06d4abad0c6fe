"""Documents: files users and administrators upload, their text, and retrieval with sources."""
