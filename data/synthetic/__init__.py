"""tensorflow-datasets builder of the embedded synthetic motion dataset (`jepa.data.synthetic`)."""
