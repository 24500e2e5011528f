"""Lazily built boto3 clients, shared by the handlers running in one process.

Nothing is built at import time. A client is cached per service, client config and AWS_*
environment, so the endpoint variables (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``,
``AWS_DISABLE_HOST_PREFIX_INJECTION``) that boto3 reads when a client is created are honoured
even when a test or the local stack changes them between invocations.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_cache: dict[tuple, Any] = {}

# StartDICOMImportJob is throttled at ~1 request/s: let the state machine's Retry (with jitter)
# own the backoff instead of hiding it inside one Lambda invocation.
NO_SDK_RETRIES = {"mode": "standard", "total_max_attempts": 1}
# Keep-alive connections per client: at least the handlers' thread pools (validation and the
# sweeper read 16 objects at a time). With botocore's default of 10, the extra threads opened a
# new connection per request (the largest cost of validation in the workflow benchmark).
MAX_POOL_CONNECTIONS = 16


def client(service: str, *, retries: dict[str, Any] | None = None) -> Any:
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (service, tuple(sorted((retries or {}).items())), env)
    with _lock:
        found = _cache.get(key)
        if found is None:
            config = Config(max_pool_connections=MAX_POOL_CONNECTIONS, retries=retries)
            found = boto3.session.Session().client(service, config=config)
            _cache[key] = found
        return found
