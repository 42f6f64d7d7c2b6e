"""mltagger: tag machine-learning content under one approved topic, or send it to human review."""

__version__ = "0.1.0"
