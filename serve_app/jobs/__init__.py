"""Jobs: generation run asynchronously, queued in the catalog and leased by the JobWorker."""
