"""The shared store on Redis (standalone, TLS or Cluster): store.py is the store; url.py
its URL and options, keys.py the keys of a namespace, scripts.py the Lua scripts that
change them, answers.py what Redis's replies mean, fence.py the outcome of an append
whose answer was lost."""
from .store import RedisStore, StoreDataLost

__all__ = ["RedisStore", "StoreDataLost"]
