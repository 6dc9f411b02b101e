"""One module per dataset family; each declares the `DatasetSpec` of its datasets, collected by the registry."""
