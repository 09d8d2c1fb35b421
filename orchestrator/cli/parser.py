"""The argparse tree of the `orchestrator` command: the flags taken before the command, then
each command group in the order `orchestrator --help` lists them."""

from __future__ import annotations

import argparse
import os

from .. import __version__
from .command import DEFAULT_ENDPOINTS, ENDPOINTS_HELP, output_flags
from .commands.cluster import add_cluster_commands
from .commands.definitions import add_definition_commands
from .commands.events import add_event_commands
from .commands.migrate import add_migrate_command
from .commands.node import add_node_command
from .commands.workflows import add_workflow_commands
from .completion import add_completion

DESCRIPTION = """The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster.

Output is for people on a terminal (tables, a tree of tasks, coloured statuses, "3 s ago") and
JSON when stdout is not a terminal, so that scripts and pipes get what they always got; --json
and --table choose, before or after the command."""
EXIT_CODES = """output:
  tables on a terminal, JSON otherwise (pipes, scripts); --json or --table choose, before or after the command

exit codes:
  0    done
  1    the cluster refused the call or could not be reached, (workflowdef validate) a definition is invalid,
       (--all) an operation failed on some workflow or was not confirmed (without a terminal: no --yes)
  2    bad usage: an unknown flag, unreadable file, or invalid JSON/YAML in a flag or file
  3    workflow start --wait: the wait ran out before the workflow ended (it is printed as it is)
  130  interrupted (Ctrl-C)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=DESCRIPTION, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_flags(parser)
    output_flags(parser, default="auto")
    commands = parser.add_subparsers(metavar="COMMAND", help="what to do")
    add_node_command(commands)
    add_migrate_command(commands)
    add_definition_commands(commands)
    add_workflow_commands(commands)
    add_cluster_commands(commands)
    add_event_commands(commands)
    add_completion(commands, parser)
    return parser


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    """--version, and how the commands reach the cluster (each falls back to its environment variable)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    parser.add_argument("--endpoints", default=os.environ.get("ORCHESTRATOR_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help=ENDPOINTS_HELP)
    parser.add_argument("--token", default=None,
                        help="the bearer token a cluster with a tokens file asks for (default: $ORCHESTRATOR_TOKEN)")
    parser.add_argument("--namespace", default=None,
                        help="the namespace whose definitions, workflows and topics to address (default: "
                             "$ORCHESTRATOR_NAMESPACE, else the token's, else the default one)")
    parser.add_argument("--tls-ca", default=None, help="CA of the nodes' TLS certificates (default: "
                                                       "$ORCHESTRATOR_TLS_CA; none: plaintext)")
    parser.add_argument("--tls-cert", default=None, help="this client's certificate, for mutual TLS "
                                                         "(default: $ORCHESTRATOR_TLS_CERT)")
    parser.add_argument("--tls-key", default=None, help="its private key (default: $ORCHESTRATOR_TLS_KEY)")
