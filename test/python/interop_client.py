#!/usr/bin/python3
"""A RippleCache client on Debian's python3-grpcio, for the interop test.

Usage: interop_client.py STUBS_DIR HOST:PORT

STUBS_DIR holds ripplecache/v1/cache_pb2*.py and grpc/health/v1/health_pb2*.py
(protoc with grpc_python_plugin). Runs a fixed sequence of calls and prints
one JSON object: {"steps": [...]}, one entry per call with its result or its
error ({"code": "INVALID_ARGUMENT", "details": "..."}). The caller asserts on
it. Exits non-zero only when the client itself breaks (the JSON says the rest).
"""
import base64
import json
import os
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402

# The generated health stubs live at STUBS_DIR/grpc/health/v1, inside the
# `grpc` package name that grpcio owns: let that package find them too.
grpc.__path__.append(os.path.join(sys.argv[1], "grpc"))

from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from ripplecache.v1 import cache_pb2, cache_pb2_grpc  # noqa: E402

TIMEOUT = 5


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def main() -> int:
    addr = sys.argv[2]
    steps = []

    def step(name, fn):
        try:
            result = fn()
        except grpc.RpcError as err:  # a status from the server
            result = {"code": err.code().name, "details": err.details()}
        steps.append({"step": name, "result": result})

    with grpc.insecure_channel(addr) as channel:
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def set_():
            r = cache.Set(
                cache_pb2.SetRequest(key="py/a", value=b"\x00hello\xff", ttl_ms=60000, flags=42),
                timeout=TIMEOUT,
            )
            return {"applied": r.applied, "revision": r.revision}

        def get(key):
            def run():
                r = cache.Get(cache_pb2.GetRequest(key=key), timeout=TIMEOUT)
                return {"found": r.found, "value": b64(r.value), "revision": r.revision, "ttl_ms": r.ttl_ms, "flags": r.flags}

            return run

        def set_if_absent():
            r = cache.Set(cache_pb2.SetRequest(key="py/a", value=b"other", if_absent=True), timeout=TIMEOUT)
            return {"applied": r.applied, "revision": r.revision}

        def incr(key, delta):
            def run():
                r = cache.Increment(cache_pb2.IncrementRequest(key=key, delta=delta), timeout=TIMEOUT)
                # int64 as a string: JSON readers in JS lose digits beyond 2^53.
                return {"value": str(r.value), "revision": r.revision}

            return run

        def get_many():
            r = cache.GetMany(cache_pb2.GetManyRequest(keys=["py/n", "py/none", "py/a"]), timeout=TIMEOUT)
            return [{"key": e.key, "found": e.found, "value": b64(e.value)} for e in r.entries]

        def delete(key, if_revision=None):
            def run():
                req = cache_pb2.DeleteRequest(key=key)
                if if_revision is not None:
                    req.if_revision = if_revision
                r = cache.Delete(req, timeout=TIMEOUT)
                return {"deleted": r.deleted, "revision": r.revision, "sent_if_revision": req.HasField("if_revision")}

            return run

        def load():
            entries = (cache_pb2.LoadRequest(key=f"py/load/{i}", value=bytes([i]) * 10) for i in range(20))
            r = cache.Load(entries, timeout=TIMEOUT)
            return {"count": r.count, "bytes": r.bytes}

        def scan():
            keys, cursor, pages = [], "", 0
            while True:
                r = cache.Scan(cache_pb2.ScanRequest(prefix="py/load/", cursor=cursor, limit=7), timeout=TIMEOUT)
                pages += 1
                keys.extend(e.key for e in r.entries)
                cursor = r.next_cursor
                if cursor == "" or pages > 50:
                    break
            return {"keys": sorted(keys), "pages": pages}

        def info():
            r = cache.Info(cache_pb2.InfoRequest(), timeout=TIMEOUT)
            return {"role": cache_pb2.Role.Name(r.role), "version": r.version, "keys": r.keys}

        def check(service):
            def run():
                r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
                return {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)}

            return run

        step("set", set_)
        step("get", get("py/a"))
        step("set_if_absent", set_if_absent)
        step("miss", get("py/missing"))
        step("incr_create", incr("py/n", 40))
        step("incr_add", incr("py/n", 2))
        step("incr_big", incr("py/big", -9223372036854775808))
        step("incr_not_integer", incr("py/a", 1))
        step("incr_overflow", incr("py/big", -1))
        step("get_many", get_many)
        step("empty_key", get(""))
        step("delete_wrong_revision", delete("py/n", 1))
        step("delete", delete("py/n"))
        step("load", load)
        step("scan", scan)
        step("info", info)
        step("health_server", check(""))
        step("health_cache", check("ripplecache.v1.CacheService"))
        step("health_unknown", check("no.such.Service"))

    print(json.dumps({"steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
