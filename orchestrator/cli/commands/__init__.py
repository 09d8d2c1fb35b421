"""The commands, one module per group: node (run a node), definitions (taskdef, workflowdef),
workflows (start, get, search, signal, watch), operations (terminate, pause, ..., with --all
through bulk), cluster (status, step-down) and events (event, handler). Each declares its
commands with `command.add` and holds the actions they run."""
