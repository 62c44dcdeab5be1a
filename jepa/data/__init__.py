"""Input pipeline: records, video decoding, readers of real datasets, grain pipelines."""
