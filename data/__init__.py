"""tensorflow-datasets builders, one per folder (`<name>/<name>_dataset_builder.py`), installed as the package
`jepa_datasets` (pyproject.toml), so as not to claim the import name `data`."""
