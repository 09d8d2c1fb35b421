"""Who may do what, through every door of a node (issue 22, items 1 and 7): the roles of the test
tokens, the gRPC services, the rule of each gRPC method (read from the table the interceptor uses)
and what each route of the HTTP port stands for. tests/unit/api/test_roles_in_process.py and
tests/integration/security/test_roles_every_path.py walk them."""

from __future__ import annotations

from typing import Any

from orchestrator.core.auth import Principal
from orchestrator_api.v1 import orchestrator_pb2 as pb

ROLE_OF = {"admin": "admin", "operator": "operator", "reader": "reader", "worker": "worker",
           "confined_admin": "admin"}
SERVICES = {s.name: s for s in pb.DESCRIPTOR.services_by_name.values()}


def expected_rule(method: str) -> tuple[str, bool]:
    """(role, cluster-wide) of "Service/Method", read from the gRPC table the interceptor uses."""
    from orchestrator.service.access import CLUSTER_WIDE, METHOD_ROLES
    service, _, name = method.partition("/")
    return METHOD_ROLES.get(service, {}).get(name, "admin"), method in CLUSTER_WIDE


def may(who: str, methods: list[str] | str) -> bool:
    """Whether `who` may do what every one of `methods` needs (a method, or a rule "role[,cluster]")."""
    held = Principal(who, frozenset({ROLE_OF[who]}), namespace="team-a" if who == "confined_admin" else None)
    for method in [methods] if isinstance(methods, str) else methods:
        role, cluster_wide = (method.split(",")[0], method.endswith(",cluster")) if "/" not in method \
            else expected_rule(method)
        if not held.may(role) or (cluster_wide and held.namespace is not None):
            return False
    return True


# What each route of the HTTP port stands for: the gRPC methods whose rules it must follow (a request
# carrying a definition also registers it), or a rule of its own ("reader,cluster": a reader's read of
# the whole cluster's), or None for the open ones. Path parameters are filled in by test_roles_every_path's
# `_variants`.
OPEN = None
REST: dict[tuple[str, str], Any] = {
    ("POST", "/api/token"): OPEN,
    ("POST", "/api/metadata/workflow"): ["MetadataService/RegisterWorkflowDef"],
    ("PUT", "/api/metadata/workflow"): ["MetadataService/RegisterWorkflowDef"],
    ("GET", "/api/metadata/workflow"): ["MetadataService/ListWorkflowDefs"],
    ("GET", "/api/metadata/workflow/{name}"): ["MetadataService/GetWorkflowDef"],
    ("DELETE", "/api/metadata/workflow/{name}/{version}"): ["MetadataService/RegisterWorkflowDef"],
    ("POST", "/api/metadata/taskdefs"): ["MetadataService/RegisterTaskDef"],
    ("PUT", "/api/metadata/taskdefs"): ["MetadataService/RegisterTaskDef"],
    ("GET", "/api/metadata/taskdefs"): ["MetadataService/ListTaskDefs"],
    ("GET", "/api/metadata/taskdefs/{name}"): ["MetadataService/GetTaskDef"],
    ("DELETE", "/api/metadata/taskdefs/{name}"): ["MetadataService/RegisterTaskDef"],
    ("POST", "/api/workflow"): ["WorkflowService/StartWorkflow"],
    ("GET", "/api/workflow/search"): ["WorkflowService/SearchWorkflows"],
    ("POST", "/api/workflow/execute/{name}/{version:int}"): ["WorkflowService/ExecuteWorkflow"],
    ("GET", "/api/workflow/{workflow_id}"): ["WorkflowService/GetWorkflow"],
    ("DELETE", "/api/workflow/{workflow_id}"): ["WorkflowService/TerminateWorkflow"],
    ("GET", "/api/workflow/{workflow_id}/status"): ["WorkflowService/GetWorkflow"],
    ("PUT", "/api/workflow/{workflow_id}/pause"): ["WorkflowService/PauseWorkflow"],
    ("PUT", "/api/workflow/{workflow_id}/resume"): ["WorkflowService/ResumeWorkflow"],
    ("POST", "/api/workflow/{workflow_id}/retry"): ["WorkflowService/RetryWorkflow"],
    ("POST", "/api/workflow/{workflow_id}/restart"): ["WorkflowService/RestartWorkflow"],
    ("POST", "/api/workflow/{workflow_id}/rerun"): ["WorkflowService/RerunWorkflow"],
    ("PUT", "/api/workflow/{workflow_id}/skiptask/{ref}"): ["WorkflowService/SkipTask"],
    ("POST", "/api/workflow/{name}"): ["WorkflowService/StartWorkflow"],
    ("GET", "/api/tasks/poll/batch/{task_type}"): ["TaskService/Connect"],
    ("GET", "/api/tasks/poll/{task_type}"): ["TaskService/Connect"],
    ("POST", "/api/tasks"): ["TaskService/Connect"],
    ("POST", "/api/tasks/update-v2"): ["TaskService/Connect"],
    ("GET", "/api/tasks/queue/sizes"): ["ClusterService/GetClusterStatus"],
    ("POST", "/api/tasks/{task_id}/log"): ["TaskService/Connect"],
    ("GET", "/api/tasks/{task_id}/log"): ["WorkflowService/GetWorkflow"],
    ("GET", "/api/tasks/{task_id}"): ["WorkflowService/GetWorkflow"],
    ("POST", "/api/tasks/{workflow_id}/{ref}/{status}"): ["WorkflowService/SignalTask"],
}
CONSOLE: dict[tuple[str, str], Any] = {
    ("GET", "/"): ["ClusterService/GetClusterStatus"],
    ("GET", "/cluster"): ["ClusterService/GetClusterStatus"],
    ("GET", "/cluster/live"): ["ClusterService/GetClusterStatus"],
    ("GET", "/executions"): ["WorkflowService/SearchWorkflows"],
    ("GET", "/executions/{workflow_id}"): ["WorkflowService/GetWorkflow"],
    ("GET", "/executions/{workflow_id}/live"): ["WorkflowService/GetWorkflow"],
    ("GET", "/executions/{workflow_id}/confirm/{op}"): ["WorkflowService/GetWorkflow"],
    ("POST", "/executions/{workflow_id}/{op}"): "per operation",
    ("GET", "/definitions"): ["MetadataService/ListWorkflowDefs"],
    ("GET", "/definitions/{name}"): ["MetadataService/GetWorkflowDef"],
    ("POST", "/definitions/{name}/start"): ["WorkflowService/StartWorkflow"],
    ("GET", "/metrics"): "reader,cluster",
    ("GET", "/healthz"): OPEN,
    ("GET", "/favicon.ico"): OPEN,
    ("POST", "/cluster/members/{node_id}/forget"): ["ClusterService/StepDown"],
    ("GET", "/login"): OPEN,
    ("POST", "/login"): OPEN,
    ("POST", "/logout"): OPEN,
    ("GET", "/static"): OPEN,
}
