"""GMAI-VL serving: the gateway, the queue, the workers, the engines, media, metrics."""

__version__ = "0.1.0"
