"""pocus-edge: distil, export and run small ultrasound models on point-of-care devices."""

__version__ = "0.2.0"
