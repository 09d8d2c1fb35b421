"""What people see on a terminal; --json prints the data instead.

format.py: statuses, times and payloads as text; workflow.py: one workflow and its task tree;
search.py: workflows as a table that fits the terminal, and what --all did; cluster.py,
definitions.py, events.py: the other commands' results; watch.py: a workflow followed as it changes."""
