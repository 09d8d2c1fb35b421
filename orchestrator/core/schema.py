"""The shapes of normalised definitions, as stored and as the decider reads them.

`definitions.py` turns what a user wrote into these shapes, with every default filled in,
so what is stored is what runs. They stay JSON-shaped dicts (TypedDicts) because they
are stored and shipped as JSON and read on every decision; the types let mypy check every
key the decider reads. Keys keep Conductor's spelling: it is the language users bring.
"""

from __future__ import annotations

from typing import Any, NotRequired, Required, TypedDict


class TaskDef(TypedDict):
    """A kind of work and its failure policy (a task definition)."""

    name: str
    description: str
    retryCount: int
    retryLogic: str                     # FIXED | LINEAR_BACKOFF | EXPONENTIAL_BACKOFF
    retryDelaySeconds: float
    backoffScaleFactor: float
    maxRetryDelaySeconds: float
    responseTimeoutSeconds: float       # the lease: no heartbeat or result for this long, the attempt times out
    timeoutSeconds: float               # bound on one attempt from its start (0 = none)
    timeoutPolicy: str                  # RETRY | TIME_OUT_WF | ALERT_ONLY
    rateLimitPerFrequency: int
    rateLimitFrequencyInSeconds: float
    concurrentExecLimit: int
    inputTemplate: NotRequired[dict[str, Any]]   # default input values, under the task's inputParameters
    pollTimeoutSeconds: NotRequired[float]       # a queued attempt not taken by a worker this long times out


class Compensation(TypedDict):
    name: str                           # the task definition that undoes the step
    inputParameters: dict[str, Any]


class SubWorkflowParam(TypedDict):
    name: str                           # or a ${...} template resolved at run time
    version: Any                        # 0 = the latest at start; or a ${...} template
    workflowDefinition: NotRequired[WorkflowDef]   # a sub-workflow defined inline (normalised)


class WorkflowTask(TypedDict, total=False):
    """One task of a workflow definition; the keys after the common ones depend on `type`."""

    name: Required[str]
    taskReferenceName: Required[str]
    type: Required[str]
    inputParameters: Required[dict[str, Any]]
    description: Required[str]
    optional: Required[bool]
    startDelay: Required[float]
    retryCount: int
    compensation: Compensation
    taskDefinition: TaskDef             # an embedded task definition (Conductor's); wins over a registered one
    taskType: str                       # a type that is not Conductor's, run by workers of that task type
    sink: Any                           # EVENT (run by workers)
    dynamicTaskNameParam: str           # DYNAMIC: the input that names the task definition to run
    scriptExpression: str               # LAMBDA (else in inputParameters)
    # INLINE, SWITCH, DECISION (and DO_WHILE's evaluatorType)
    expression: str
    evaluatorType: str                  # value-param | expression | javascript | graaljs
    caseValueParam: str
    caseExpression: str
    decisionCases: dict[str, list[WorkflowTask]]
    defaultCase: list[WorkflowTask]
    # TERMINATE
    terminationStatus: str
    terminationReason: Any              # a template
    workflowOutput: Any                 # a template
    # WAIT
    duration: float | None
    until: Any                          # epoch ms or a template
    # SUB_WORKFLOW
    subWorkflowParam: SubWorkflowParam
    # FORK_JOIN, FORK_JOIN_DYNAMIC and JOIN
    forkTasks: list[list[WorkflowTask]]
    dynamicForkTasksParam: str
    dynamicForkTasksInputParamName: str
    forkTaskName: str
    forkTaskInputs: Any                 # a template resolving to a list
    joinOn: list[str]
    defaultExclusiveJoinTask: list[str]   # EXCLUSIVE_JOIN
    # DO_WHILE
    loopCondition: str | None
    loopOver: list[WorkflowTask]
    items: Any                          # a template resolving to a list
    maxIterations: int


class WorkflowDef(TypedDict):
    name: str
    version: int
    description: str
    tasks: list[WorkflowTask]
    inputParameters: list[str]
    outputParameters: dict[str, Any]    # empty: the workflow's output is its last task's (as in Conductor)
    timeoutSeconds: float
    timeoutPolicy: str                  # TIME_OUT_WF | ALERT_ONLY
    failureWorkflow: str                # a name, or `$workflow.input.x` / `${...}` read when it fails
    variables: dict[str, Any]
    # Conductor's fields with behaviour here (the others it has are kept as written, see definitions.py)
    inputTemplate: NotRequired[dict[str, Any]]   # default values of the workflow's input
    failureWorkflowVersion: NotRequired[int]
    schemaVersion: NotRequired[int]


class Snapshot(TypedDict):
    """A definition with everything it can reach, frozen for one run."""

    workflow: WorkflowDef
    taskDefs: dict[str, TaskDef]
    subWorkflows: dict[str, WorkflowDef]   # "name:version" -> definition
