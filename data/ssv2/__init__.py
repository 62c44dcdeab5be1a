"""tensorflow-datasets builder for Something-Something v2 (`ssv2_dataset_builder.Builder`)."""
