"""The cluster of a multi-worker run, read from the `TF_CONFIG` environment variable.

`train.strategy: multi-worker` (`mfn4rec_tf/multi_worker.py`) trains one model on several
processes, usually one per machine, with `tf.distribute.MultiWorkerMirroredStrategy`. Each process
learns the cluster and its own place in it from `TF_CONFIG`, a JSON object in TensorFlow's format::

    {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
     "task": {"type": "worker", "index": 0}}

Every process gets the same `cluster` and its own `task`. A `chief` job (one address) may stand
beside the workers; it trains like a worker. The chief, the process that writes the run directory,
is task `chief` when there is one, else worker 0. Parameter servers and evaluators are not part of
this kind of training and are refused.

Nothing here imports TensorFlow, so a bad `TF_CONFIG` is reported (one line, naming the variable and
the key) before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

ENV = "TF_CONFIG"
JOBS = ("chief", "worker")
EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


class ClusterError(ValueError):
    """`TF_CONFIG` is missing or does not describe a cluster this package can train on."""


@dataclass(frozen=True)
class Cluster:
    """A multi-worker cluster and this process's place in it.

    Attributes:
        jobs: job name -> addresses (`host:port`), as in `TF_CONFIG`.
        task_type, task_index: this process's job and index.
    """

    jobs: dict
    task_type: str
    task_index: int

    @property
    def addresses(self) -> tuple:
        """Every process's address, the chief first (TensorFlow's order of the replicas)."""
        return tuple(self.jobs.get("chief", ())) + tuple(self.jobs["worker"])

    @property
    def num_workers(self) -> int:
        """The processes that train (the chief included)."""
        return len(self.addresses)

    @property
    def rank(self) -> int:
        """This process's position in `addresses` (0 = the chief)."""
        if self.task_type == "chief":
            return 0
        return len(self.jobs.get("chief", ())) + self.task_index

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.task_type} {self.task_index} of {self.num_workers} process(es) ({', '.join(self.addresses)})"


def read_cluster(environ=None) -> Cluster:
    """The cluster described by `TF_CONFIG` in `environ` (default `os.environ`).

    Raises:
        ClusterError: the variable is missing or empty, is not JSON, or does not describe a cluster of
            workers (every message names `TF_CONFIG` and the key at fault).
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ENV, "")
    if not text.strip():
        raise ClusterError(f"`train.strategy: multi-worker` needs the {ENV} environment variable (the cluster's "
                           f"addresses and this process's task), e.g. {ENV}='{EXAMPLE}'")
    return parse_cluster(text)


def parse_cluster(text: str) -> Cluster:
    """Parses the JSON text of `TF_CONFIG` (see `read_cluster`).

    >>> parse_cluster('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}').rank
    1
    >>> parse_cluster('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    Traceback (most recent call last):
    ...
    mfn4rec_tf.cluster.ClusterError: TF_CONFIG task.index 3 is out of range: job 'worker' has 1 address(es).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterError(f"{ENV} is not valid JSON ({error}): {_excerpt(text)}") from None
    if not isinstance(data, dict):
        raise ClusterError(f"{ENV} must be a JSON object with 'cluster' and 'task'. Received: {_excerpt(text)}")
    jobs = _jobs(data.get("cluster"))
    task = data.get("task")
    if not isinstance(task, dict):
        raise ClusterError(f"{ENV} needs 'task': {{\"type\": <job>, \"index\": <n>}} (this process's place). "
                           f"Received: {task!r}")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in jobs:
        raise ClusterError(f"{ENV} task.type must be one of the cluster's jobs {sorted(jobs)}. Received: {task_type!r}")
    if isinstance(task_index, bool) or not isinstance(task_index, int):
        raise ClusterError(f"{ENV} task.index must be an integer. Received: {task_index!r}")
    if not 0 <= task_index < len(jobs[task_type]):
        raise ClusterError(f"{ENV} task.index {task_index} is out of range: job {task_type!r} has "
                           f"{len(jobs[task_type])} address(es).")
    return Cluster(jobs, task_type, task_index)


def _jobs(cluster) -> dict:
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterError(f"{ENV} needs 'cluster': {{\"worker\": [\"host:port\", ...]}}. Received: {cluster!r}")
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise ClusterError(f"{ENV} cluster job(s) {unknown} cannot take part: multi-worker training has workers and "
                           f"an optional chief only (no parameter servers or evaluators).")
    if "worker" not in cluster:
        raise ClusterError(f"{ENV} cluster needs a 'worker' job (a list of host:port addresses).")
    jobs, seen = {}, set()
    for name in JOBS:
        if name not in cluster:
            continue
        addresses = cluster[name]
        if not isinstance(addresses, list) or not addresses:
            raise ClusterError(f"{ENV} cluster.{name} must be a non-empty list of host:port addresses. "
                               f"Received: {addresses!r}")
        for address in addresses:
            _check_address(f"cluster.{name}", address)
            if address in seen:
                raise ClusterError(f"{ENV} cluster lists {address!r} twice: every process needs its own address.")
            seen.add(address)
        jobs[name] = list(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise ClusterError(f"{ENV} cluster.chief has {len(jobs['chief'])} addresses; it takes one.")
    return jobs


def _check_address(key, address):
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"{ENV} {key} has {address!r}; each address must be host:port (port 1-65535).")


def _excerpt(text, width=80):
    text = " ".join(str(text).split())
    return repr(text if len(text) <= width else text[:width] + "...")
