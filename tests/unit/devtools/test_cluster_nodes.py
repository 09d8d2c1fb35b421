"""How the local Redis Cluster launcher reads CLUSTER NODES (devtools/redis_cluster.py)."""

from __future__ import annotations

from devtools.redis_cluster import parse_cluster_nodes

# three lines as a master of a cluster prints them (ids shortened): itself, a replica of another master, a master
# with a slot being migrated away ("[...]" entries are not served slots)
NODES = """\
aaaaaaaa 127.0.0.1:32835@35953 myself,master - 0 1796566494000 20 connected 0-58 5461-10922
bbbbbbbb 127.0.0.1:34669@58489 slave cccccccc 0 1796566494118 18 connected
cccccccc 127.0.0.1:37843@33723 master,fail? - 0 1796566494106 18 connected 60-5460 7 [8->-aaaaaaaa]
"""


def test_each_line_gives_the_role_the_slots_and_the_config_epoch() -> None:
    mine, replica, other = parse_cluster_nodes(NODES)
    assert (mine.port, mine.is_master, mine.slots, mine.config_epoch) == (32835, True, ((0, 58), (5461, 10922)), 20)
    assert "myself" in mine.flags and not mine.failing
    assert (replica.is_master, replica.master_id, replica.slots, replica.config_epoch) == (
        False, "cccccccc", (), 18)
    assert other.slots == ((7, 7), (60, 5460)) and other.failing
