"""Data: the challenge layout (reader, validator), images, datasets, transforms, samplers."""
