"""Dataset preparation (rule prepare_dataset), the prepared HDF5 layout, ImageNet index datasets, class names."""
