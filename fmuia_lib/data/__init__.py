"""Data: the challenge layout, datasets, transforms, samplers, phantom and converters."""
