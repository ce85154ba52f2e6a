"""The Redis Streams engine (``minionize[redis]``): engine, client, admin and Lua scripts."""

from .engine import RedisEngine

__all__ = ["RedisEngine"]
