"""The hostile jq programs of issue 22 item 2, shared by the sandbox tests (in-process and on a
real node)."""

from __future__ import annotations

HUNDRED = list(range(100))

# The programs of the issue, and what becomes of each now.
HOSTILE_JQ = {
    "five nested loops over 100 items (1e10 steps: hours)":
        ("[.a[] as $x | .a[] as $y | .a[] as $z | .a[] as $w | .a[] as $v | 1] | length",
         "ran longer than the limit of 1000 ms"),
    "four nested loops (1e8 steps: minutes)":
        ("[.a[] as $x | .a[] as $y | .a[] as $z | .a[] as $w | 1] | length", "ran longer than the limit of 1000 ms"),
    "10 GB of text": ('"x" * 1e10', "Repeat string result too long"),   # libjq 1.8 refuses it itself
    "1 GB of text": ('"x" * 1e9 | length', "cannot allocate memory"),    # the memory limit ends its process
    "a 300M array from nothing": ("[] | .[300000000] = 1 | length", "cannot allocate memory"),
    "a 3M array from nothing": ("[] | .[3000000] = 1", "more than 10000 values or 2097152 characters"),
}
