"""Raw data -> dataset directory pipelines (run as `python -m pipelines.<source>`)."""
