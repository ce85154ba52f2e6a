"""The Google Pub/Sub engine (``minionize[pubsub]``): engine, client and admin."""

from .engine import PubSubEngine

__all__ = ["PubSubEngine"]
