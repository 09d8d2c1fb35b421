"""The Redis implementation of the store: `RedisStore`."""

from .adapter import RedisStore

__all__ = ["RedisStore"]
