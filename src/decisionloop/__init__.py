"""decisionloop: the closed decision loop for banks."""

__version__ = "0.1.0"
