"""pocus-edge: distil, export and run small ultrasound models on point-of-care devices."""

__version__ = "0.1.0"
