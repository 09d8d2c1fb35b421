"""A highly available workflow orchestrator: an etcd-elected leader runs the engine,
workflow state lives in Redis behind fenced atomic transitions, and tasks are pushed
to workers over gRPC streams."""

__version__ = "0.1.0"
