"""fmuia: multi-task ultrasound image analysis helpers."""
__version__ = "0.1.0"
