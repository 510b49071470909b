"""Checks gRPC health the way the kubelet's native gRPC probe does.

Usage: health_check.py STUBS_DIR HOST:PORT SERVICE
Prints the status name (SERVING, NOT_SERVING, ...) or the gRPC error code name.
"""
import sys

sys.path.insert(0, sys.argv[1])

import os  # noqa: E402

import grpc  # noqa: E402

# The generated stubs live at STUBS_DIR/grpc/health/v1, inside the `grpc`
# package name that grpcio owns: let that package find them too.
grpc.__path__.append(os.path.join(sys.argv[1], "grpc"))

from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=sys.argv[3]), timeout=5)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    except grpc.RpcError as err:
        print(err.code().name)
