"""The orchestrator's wire contract: the gRPC stubs generated from `v1/orchestrator.proto`
(`orchestrator_api.v1`), the conversions between protobuf Structs and JSON-like values
(`orchestrator_api.structs`), and the gathering of a worker stream's messages into batches
(`orchestrator_api.batches`).

Both the node and the worker SDK depend on this package; it depends on nothing of theirs.
"""
