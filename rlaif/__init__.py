"""rlaif: Constitutional AI / RLAIF synthetic feedback engine."""

__version__ = "0.1.0"
