"""The Apache Pulsar engine (``minionize[pulsar]``): engine, client and admin."""

from .engine import PulsarEngine

__all__ = ["PulsarEngine"]
