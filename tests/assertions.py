"""Checks that fail when what they look for is not there (imported as `assertions`).

A missing Prometheus series is not a zero: `series` fails for it, where reading it with a
default would let `== 0` pass for a metric that was renamed, relabelled or never written.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    """Every sample of `base_url`/metrics, by name and labels."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def labels_of(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every series of `name` (empty when there is none)."""
    return [dict(labels) for (found, labels) in samples if found == name]


def series(samples: Samples, name: str, **labels: str) -> float:
    """The value of the series `name{labels}`; an AssertionError naming the series of `name`
    there are when it does not exist."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no series {name}{labels}; the series of {name}: {labels_of(samples, name)}"
    return samples[key]


def absent(samples: Samples, name: str, **labels: str) -> None:
    """The series `name{labels}` does not exist, while `name` has other series (so the name is right)."""
    assert labels_of(samples, name), f"no series of {name} at all"
    key = (name, frozenset(labels.items()))
    assert key not in samples, f"{name}{labels} = {samples[key]}"


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the series `name{labels}` grew from `before` to `after`. It must exist in `after`;
    in `before` it may be missing only for a labelled counter (`_total`) whose label value had not
    been counted yet (a counter's series appears with its first count)."""
    now = series(after, name, **labels)
    if labels and name.endswith("_total") and (name, frozenset(labels.items())) not in before:
        return now
    return now - series(before, name, **labels)
