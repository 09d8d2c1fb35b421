#!/usr/bin/env bash
# Turn on etcd's own users and roles for the orchestrator, once per etcd cluster.
#
# etcd run with --client-cert-auth takes a client certificate's common name (CN) as its user
# name. This makes two users: `root` (etcd's administrator, the CN of the certificate you run
# this with) and the nodes' user (the CN of the nodes' etcd client certificate), whose one role
# may read and write only under the cluster's key prefix `/orchestrator/<cluster>/`. Any other
# certificate the CA signed is then refused by etcd, and the nodes cannot touch other keys.
#
#   ETCDCTL_ENDPOINTS=https://etcd-a:2379,https://etcd-b:2379,https://etcd-c:2379 \
#   ETCDCTL_CACERT=ca.pem ETCDCTL_CERT=root.pem ETCDCTL_KEY=root.key \
#   deploy/production/etcd-auth.sh <cluster name> "<CN of the nodes' etcd certificate>"
#
# Run it again for another orchestrator cluster on the same etcd (it adds that cluster's role);
# the `cluster` setting of node.yaml is the cluster name. Undo with `etcdctl auth disable`.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 <cluster name> <common name of the nodes' etcd client certificate>" >&2
  exit 2
fi
cluster=$1
node_user=$2
role="orchestrator-${cluster}"

auth_enabled() { etcdctl auth status 2>/dev/null | grep -q "Authentication Status: true"; }

# a user, role or grant that already exists is left as it is (the script may run twice)
quietly() { "$@" >/dev/null 2>&1 || true; }

quietly etcdctl user add root --no-password
quietly etcdctl user grant-role root root
quietly etcdctl role add "$role"
etcdctl role grant-permission "$role" readwrite "/orchestrator/${cluster}/" --prefix=true >/dev/null
quietly etcdctl user add "$node_user" --no-password
etcdctl user grant-role "$node_user" "$role" >/dev/null
auth_enabled || etcdctl auth enable >/dev/null
etcdctl role get "$role"
echo "etcd auth is on: '$node_user' may read and write /orchestrator/${cluster}/ only"
