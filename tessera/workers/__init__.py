"""Async ingestion: the API's queue intake, the queue workers that run the pipeline, their
dead letters and the queue status."""
