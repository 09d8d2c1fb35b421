"""Generated from orchestrator.proto by `make proto`; do not edit the *_pb2 modules by hand."""
