"""The Redis implementation of the store: `RedisStore`."""

from .adapter import RedisAccess, RedisStore

__all__ = ["RedisAccess", "RedisStore"]
