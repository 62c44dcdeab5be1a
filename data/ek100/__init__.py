"""tensorflow-datasets builder for EPIC-KITCHENS-100 action anticipation (`ek100_dataset_builder.Builder`)."""
