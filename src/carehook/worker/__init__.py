"""The worker: claim due events, run their workflow's steps, retry or dead-letter."""
