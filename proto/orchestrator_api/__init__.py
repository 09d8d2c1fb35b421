"""The orchestrator's wire contract: the gRPC stubs generated from `v1/orchestrator.proto`
(`orchestrator_api.v1`) and the conversions between protobuf Structs and JSON-like values
(`orchestrator_api.structs`).

Both the node and the worker SDK depend on this package; it depends on nothing of theirs.
"""
