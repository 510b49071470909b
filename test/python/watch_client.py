#!/usr/bin/python3
"""A RippleCache Watch client on Debian's python3-grpcio, for interop tests.

Usage: watch_client.py STUBS_DIR HOST:PORT KEY COUNT

STUBS_DIR holds ripplecache/v1/cache_pb2.py and cache_pb2_grpc.py (protoc
with grpc_python_plugin). Watches KEY with values and prints one JSON line for
Created ({"created": revision}) and one per event, then exits 0 after COUNT
events. Any other message or error exits non-zero.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from ripplecache.v1 import cache_pb2, cache_pb2_grpc  # noqa: E402


def main() -> int:
    addr, key, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
    with grpc.insecure_channel(addr) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        stream = stub.Watch(cache_pb2.WatchRequest(key=key, with_values=True), timeout=30)
        seen = 0
        for message in stream:
            kind = message.WhichOneof("kind")
            if kind == "created":
                print(json.dumps({"created": message.created.revision}), flush=True)
            elif kind == "events":
                for e in message.events.events:
                    print(
                        json.dumps(
                            {
                                "type": cache_pb2.EventType.Name(e.type),
                                "key": e.key,
                                "revision": e.revision,
                                "value": e.value.decode("utf-8"),
                                "flags": e.flags,
                            }
                        ),
                        flush=True,
                    )
                    seen += 1
                if seen >= count:
                    stream.cancel()
                    return 0
            else:
                print(f"unexpected message: {message}", file=sys.stderr)
                return 1
    print("the stream ended early", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
