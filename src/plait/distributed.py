"""Training on several devices, processes and machines, with ``keras.distribution`` on JAX.

Three things live here, so the rest of plait only asks a few questions:

- ``train.distribution`` (``Distribution``): how many devices each process trains on, and
  whether large embedding tables are split across them (model parallel);
- the process group (``Cluster``): from ``plait train --coordinator/--num-processes/
  --process-id``, from ``PLAIT_*`` variables, from a SLURM step (``SLURM_PROCID``,
  ``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST``) or a Kubernetes indexed Job
  (``JOB_COMPLETION_INDEX``); ``join`` starts JAX's distributed runtime with it;
- the plan of one training run (``Plan``): the Keras distribution to train under, each
  process's share of the rows, and the trained model brought back onto one device.

How the rows are shared keeps the arithmetic of one process: the global batch is
``train.batch_size`` and holds the same rows at each step as a one-process run with the same
seed; each process feeds its contiguous slice of it, and each device its slice of that. A
streamed run's cached parts are dealt out instead (process ``i`` reads parts ``i``, ``i + n``,
...), so no process reads the whole cache. Gradients are averaged over the global batch by
the compiled step itself. Process 0 alone writes checkpoints and the bundle.

Nothing here imports JAX or Keras at import time: the number of host devices and the
distributed runtime must be set before JAX starts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator

from plait.errors import ConfigError, DataError
from plait.schema import Strict

DEFAULT_PORT = 12355
"""The coordinator's port when only its host is known (SLURM, or ``PLAIT_COORDINATOR=host``)."""

Result = TypeVar("Result")


class Distribution(Strict):
    """``train.distribution``: the devices each process trains on.

    ``devices`` is a count, or ``all`` (every accelerator the process sees); on a machine
    without accelerators a count ``N`` makes JAX split the CPU into ``N`` host devices. The
    global batch stays ``train.batch_size``, split evenly over all devices of all processes.
    ``model_parallel: N`` splits every embedding table of more than ``shard_above_rows``
    rows across groups of ``N`` devices (by rows when they divide evenly, else by columns);
    the rest of the model is copied on every device.

    >>> Distribution(devices=2).devices_wanted
    2
    >>> Distribution(model_parallel=2).devices_wanted   # model parallel needs its devices
    2
    """

    devices: int | Literal["all"] | None = None
    model_parallel: int = Field(default=1, ge=1, le=4096)
    shard_above_rows: int = Field(default=100_000, ge=1)

    @field_validator("devices", mode="before")
    @classmethod
    def _count_or_all(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if value is None or value == "all" or (isinstance(value, int) and not isinstance(value, bool)
                                               and value >= 1):
            return value
        raise ValueError(f"found {value!r}; expected a number of devices (1 or more) or 'all'")

    @property
    def devices_wanted(self) -> int | Literal["all"] | None:
        if self.devices is None and self.model_parallel > 1:
            return self.model_parallel
        return self.devices


# -- the process group -------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in a group of training processes."""

    coordinator: str
    """``HOST:PORT`` of process 0, which runs JAX's coordination service."""
    num_processes: int
    process_id: int
    heartbeat_timeout: int = 60
    """Seconds without a heartbeat after which a process counts as dead and the others stop."""
    join_timeout: int = 300
    """Seconds a process waits for the whole group to connect."""
    found_in: str = "command line"


def read_cluster(coordinator: str | None = None, num_processes: int | None = None,
                 process_id: int | None = None, heartbeat_timeout: int = 60,
                 environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The process group from the flags, else ``PLAIT_COORDINATOR``/``PLAIT_NUM_PROCESSES``/
    ``PLAIT_PROCESS_ID``, else a SLURM step, else a Kubernetes indexed Job
    (``JOB_COMPLETION_INDEX``, with ``PLAIT_COORDINATOR`` and ``PLAIT_NUM_PROCESSES`` set in
    the manifest); None for a run on its own.

    >>> read_cluster(environ={})
    >>> read_cluster("10.0.0.1:1234", 2, 1, environ={}).process_id
    1
    >>> slurm = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-10]"}
    >>> read_cluster(environ=slurm).coordinator
    'gpu07:12355'
    >>> k8s = {"JOB_COMPLETION_INDEX": "1", "PLAIT_NUM_PROCESSES": "2",
    ...        "PLAIT_COORDINATOR": "train-0.train:1234"}
    >>> (read_cluster(environ=k8s).process_id, read_cluster(environ=k8s).found_in)
    (1, 'Kubernetes (JOB_COMPLETION_INDEX)')
    """
    env = os.environ if environ is None else environ
    found_in = "command line"
    if coordinator is None and num_processes is None and process_id is None:
        coordinator, num_processes, process_id, found_in = _from_environment(env)
    if coordinator is None and num_processes is None and process_id is None:
        return None
    if num_processes is None or coordinator is None:
        missing = "--num-processes" if num_processes is None else "--coordinator"
        raise ConfigError(f"{missing}: missing; a group of training processes needs --coordinator "
                          f"HOST:PORT (process 0's address), --num-processes and --process-id "
                          f"(found in the {found_in})")
    if process_id is None:
        raise ConfigError(f"--process-id: missing; expected this process's number, 0 to "
                          f"{num_processes - 1} (found the rest in the {found_in})")
    if num_processes < 1:
        raise ConfigError(f"--num-processes: found {num_processes}; expected 1 or more")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id: found {process_id}; expected 0 to {num_processes - 1} "
                          f"for {num_processes} processes")
    if num_processes == 1:
        return None
    return Cluster(_address(coordinator), num_processes, process_id, heartbeat_timeout, found_in=found_in)


def _from_environment(env: Mapping[str, str]) -> tuple[str | None, int | None, int | None, str]:
    coordinator = env.get("PLAIT_COORDINATOR")
    count, index = _number(env, "PLAIT_NUM_PROCESSES"), _number(env, "PLAIT_PROCESS_ID")
    if count is not None or index is not None:
        if index is None and "JOB_COMPLETION_INDEX" in env:
            index = _number(env, "JOB_COMPLETION_INDEX")
            return coordinator, count, index, "Kubernetes (JOB_COMPLETION_INDEX)"
        return coordinator, count, index, "PLAIT_* environment variables"
    tasks = _number(env, "SLURM_STEP_NUM_TASKS")
    if tasks is not None and tasks > 1 and "SLURM_PROCID" in env:
        host = coordinator or first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
        return host or None, tasks, _number(env, "SLURM_PROCID"), "SLURM step (SLURM_PROCID)"
    return None, None, None, ""


def _number(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}: found {value!r}; expected a whole number") from None


def _address(coordinator: str) -> str:
    """``HOST:PORT``, the port defaulting to ``DEFAULT_PORT``.

    >>> _address("node1"), _address("[::1]:99")
    ('node1:12355', '[::1]:99')
    """
    host, colon, port = coordinator.rpartition(":")
    if not colon or host.endswith(":") or (host.startswith("[") != host.endswith("]")):
        host, port = coordinator, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator: found {coordinator!r}; expected HOST:PORT, process 0's "
                          "address and a free port (e.g. 10.0.0.1:12355)")
    return f"{host}:{port}"


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: process 0 runs there.

    >>> first_host("node[003-005,9],login1"), first_host("a1,a2"), first_host("")
    ('node003', 'a1', '')
    """
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist)
    if match is None:
        return ""
    prefix, ranges = match.group(1), match.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


_JOINED: Cluster | None = None


def join(cluster: Cluster, distribution: Distribution | None = None) -> None:
    """Start JAX's distributed runtime for ``cluster``: before anything else uses JAX.

    CPU collectives go over gloo, so a group of CPU processes (one machine or several)
    trains together; a process that stops sending heartbeats for
    ``cluster.heartbeat_timeout`` seconds makes the others stop with JAX's message that
    another task died, instead of waiting for it forever.
    """
    global _JOINED
    import jax

    reserve_devices(distribution or Distribution(devices=1))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            cluster.coordinator, cluster.num_processes, cluster.process_id,
            initialization_timeout=cluster.join_timeout,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout,
            # A process that finishes first (any but 0, which writes the bundle) waits this
            # long for the others at exit; a dead process is caught by its heartbeats.
            shutdown_timeout_seconds=3600)
    except RuntimeError as error:
        raise ConfigError(f"cannot join the group of {cluster.num_processes} processes at "
                          f"{cluster.coordinator} as process {cluster.process_id}: "
                          f"{str(error).splitlines()[0]}") from None
    _JOINED = cluster


def devices_flag(devices: str | None) -> int | Literal["all"] | None:
    """``plait train --devices``, checked.

    >>> devices_flag("2"), devices_flag("all"), devices_flag(None)
    (2, 'all', None)
    """
    try:
        return Distribution(devices=devices).devices
    except ValidationError:
        raise ConfigError(f"--devices: found {devices!r}; expected a number of devices (1 or more) "
                          "or 'all'") from None


def from_command_line(spec: Any, devices: int | Literal["all"] | None, cluster: Cluster | None) -> Any:
    """``spec`` with ``plait train --devices`` (see ``devices_flag``) in
    ``train.distribution``, after joining ``cluster`` (if any): what the ``train`` command
    does before anything else."""
    distribution = spec.train.distribution or Distribution()
    if devices is not None:
        distribution = distribution.model_copy(update={"devices": devices})
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"distribution": distribution})})
    if cluster is not None:
        join(cluster, distribution)
    return spec


def stop_now(status: int) -> None:
    """In a group: leave at once, flushing what was printed. A normal exit would wait at
    JAX's exit barrier for processes that in turn wait for this one; a process gone quiet
    makes the others stop after a missed heartbeat instead."""
    if _JOINED is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def lost_peer(error: BaseException) -> str | None:
    """For a process of a group whose step failed because another process went away (a
    collective cut off, the coordination service gone): what to tell the user; else None."""
    text = str(error)
    signs = ("Gloo", "Connection closed", "Connection reset", "coordination service", "heartbeat")
    if _JOINED is None or not any(sign in text for sign in signs):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return (f"process {_JOINED.process_id} of {_JOINED.num_processes}: another process of the group "
            f"stopped, so this one stops too ({first[:200]}); start all {_JOINED.num_processes} "
            "again with --resume to continue from the last checkpoint")


def joined() -> Cluster | None:
    """The group this process joined through ``join``, if any."""
    return _JOINED


def is_chief() -> bool:
    """Whether this process writes checkpoints and the bundle: process 0 of a group, or a
    process on its own."""
    if _JOINED is not None:
        return _JOINED.process_id == 0
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def reserve_devices(distribution: Distribution | None) -> None:
    """Ask JAX for the host devices ``distribution`` needs, before JAX starts (on a machine
    with accelerators these are unused). Once JAX has started, ``Plan`` checks what it got."""
    wanted = distribution.devices_wanted if distribution else None
    if not isinstance(wanted, int):
        return
    import jax

    with contextlib.suppress(RuntimeError):  # already started: the plan reports a shortfall
        jax.config.update("jax_num_cpu_devices", wanted)


def chief_first(needed: bool, work: Callable[[], Result]) -> Result:
    """``work()`` on process 0, then on the others: process 0 fills a shared cache (fitted
    states, encoded parts) that the others then find instead of writing it at the same time.
    On its own, or when ``needed`` is false, simply ``work()``."""
    if not needed or not _group_running():
        return work()
    from jax.experimental import multihost_utils

    if is_chief():
        result = work()
        multihost_utils.sync_global_devices("plait: process 0 has prepared the data")
        return result
    multihost_utils.sync_global_devices("plait: process 0 has prepared the data")
    return work()


def _group_running() -> bool:
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


# -- one training run ----------------------------------------------------------------------


class Plan:
    """How one run trains: the Keras distribution, the devices, and this process's share.

    Made by ``plan_for``; the model is built and trained inside ``scope()``, batches go
    through ``share``, and ``localized`` gives back the trained model on one device, for
    predictions and saving, in every process alike.
    """

    def __init__(self, keras_distribution: Any, devices: list[Any], replicas: int, processes: int,
                 process: int, tables: Any = None) -> None:
        self.keras_distribution = keras_distribution
        self.devices, self.replicas = devices, replicas
        self.processes, self.process = processes, process
        self.tables = tables
        """With model parallel: the LayoutMap, filled with the tables split as they are made."""

    def scope(self) -> Any:
        return self.keras_distribution.scope()

    def share(self, batches: Any) -> Any:
        """This process's share of ``batches`` (a ``plait.training.Batches``): its slice of
        every global batch, or, for a streamed run in a group, batches from its own parts."""
        from plait.parts import StoredPart

        if batches is None:
            return None
        if self.processes > 1 and batches.shuffle and any(isinstance(p, StoredPart) for p in batches.parts):
            return as_dataset(PartShare)(batches, self.processes, self.process)
        return as_dataset(RowShare)(batches, self.replicas, self.processes, self.process)

    def agree(self, value: int, what: str) -> None:
        """Stop unless every process of the group has the same ``value``."""
        if self.processes == 1:
            return
        import numpy as np
        from jax.experimental import multihost_utils

        values = multihost_utils.process_allgather(np.asarray([value]))
        if len(set(np.asarray(values).ravel().tolist())) > 1:
            raise DataError(f"the processes disagree on {what}: {np.asarray(values).ravel().tolist()} "
                            "(process 0 first); the checkpoint folder must be one that every process "
                            "reads (a shared file system)")

    def localized(self, model: Any, rebuild: Callable[[], Any]) -> Any:
        """The trained ``model`` as a plain one-device model: ``rebuild()`` (the same
        architecture, built outside the distribution) given the trained weights and optimizer
        state. Every process of a group holds all of them (only tables split by model
        parallel are spread, and that runs in one process)."""
        with outside_distribution():
            local = rebuild()
            local.set_weights(model.get_weights())
            if model.optimizer.built:
                local.optimizer.build(local.trainable_variables)
                for target, source in zip(local.optimizer.variables, model.optimizer.variables, strict=True):
                    target.assign(source.numpy())
        return local

    def describe(self) -> str:
        """One line for the log: devices, processes, and the tables split.

        >>> Plan(None, ["cpu:0", "cpu:1"], 2, 1, 0).describe()
        'data parallel over 2 devices (cpu:0, cpu:1) in 1 process'
        """
        shown = ", ".join(map(str, self.devices[:8])) + (", ..." if len(self.devices) > 8 else "")
        split = len(self.devices) // self.replicas
        copies = f"{self.replicas} model cop{'ies' if self.replicas > 1 else 'y'}"
        kind = "data parallel" if split == 1 else f"tables split in {split}, {copies}"
        line = f"{kind} over {len(self.devices)} devices ({shown}) in {self.processes} process"
        line += "es" if self.processes > 1 else ""
        if self.tables:
            line += "; split: " + ", ".join(self.tables)
        return line


def plan_for(distribution: Distribution | None, batch_size: int) -> Plan | None:
    """The plan for training with ``distribution`` (and the group joined, if any); None when
    one device of one process trains, as without a distribution."""
    import jax
    import keras

    setting = distribution or Distribution()
    processes = jax.process_count() if jax.distributed.is_initialized() else 1
    if setting.devices_wanted is None and processes == 1:
        return None
    if keras.backend.backend() != "jax":
        raise ConfigError(f"train.distribution: needs the jax backend; found KERAS_BACKEND="
                          f"{keras.backend.backend()!r}")
    devices = _mesh_devices(setting.devices_wanted or "all", processes)
    if len(devices) == 1:
        return None
    split = setting.model_parallel
    if split > 1 and processes > 1:
        raise ConfigError(f"train.distribution.model_parallel: found {split} with {processes} processes; "
                          "tables are split across the devices of one process: use data parallel "
                          "(model_parallel: 1) in a group of processes")
    if len(devices) % split:
        raise ConfigError(f"train.distribution.model_parallel: found {split}; expected a divisor of "
                          f"the {len(devices)} devices")
    replicas = len(devices) // split
    if batch_size % replicas:
        raise ConfigError(f"train.batch_size: found {batch_size}; expected a multiple of {replicas}, "
                          f"the number of model copies it is split over ({len(devices)} devices"
                          + (f" in {processes} processes)" if processes > 1 else ")"))
    names = [f"{device.platform}:{device.id}" for device in devices]
    index = jax.process_index() if processes > 1 else 0
    if split == 1:
        chosen = keras.distribution.DataParallel(devices=names, auto_shard_dataset=False)
        return Plan(chosen, names, replicas, processes, index)
    mesh = keras.distribution.DeviceMesh((replicas, split), ["batch", "model"], names)
    tables = keras.distribution.LayoutMap(mesh)
    chosen = _large_tables_split(tables, split, setting.shard_above_rows)
    return Plan(chosen, names, replicas, processes, index, tables)


def _mesh_devices(wanted: int | Literal["all"], processes: int) -> list[Any]:
    """The first ``wanted`` devices of every process (of the default kind: accelerators when
    there are any), process by process."""
    import jax

    local = jax.local_devices()
    if wanted != "all" and len(local) < wanted:
        kind = local[0].platform.upper()
        hint = (" (JAX had started before plait could ask for more host devices: set "
                "train.distribution before the first model is trained or loaded in this process)"
                if kind == "CPU" else "")
        raise ConfigError(f"train.distribution.devices: found {wanted}; this process has "
                          f"{len(local)} {kind} device{'s' if len(local) > 1 else ''}{hint}")
    count = len(local) if wanted == "all" else wanted
    by_process: dict[int, list[Any]] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    return [device for process in sorted(by_process) for device in by_process[process][:count]]


def _large_tables_split(tables: Any, split: int, above_rows: int) -> Any:
    """A ``keras.distribution.ModelParallel`` that, as each embedding table of more than
    ``above_rows`` rows is made, records in ``tables`` (its LayoutMap) that it is split over
    the ``model`` axis: by rows when they divide evenly, else by columns."""
    import keras

    class LargeTablesSplit(keras.distribution.ModelParallel):
        def get_variable_layout(self, variable: Any) -> Any:
            shape = tuple(variable.shape)
            if (variable.path.endswith("embeddings") and len(shape) == 2 and shape[0] > above_rows
                    and tables[variable.path] is None):  # a LayoutMap gives None for a path it lacks
                tables[variable.path] = _table_axes(variable.path, shape, split)
            return super().get_variable_layout(variable)

    return LargeTablesSplit(layout_map=tables, batch_dim_name="batch", auto_shard_dataset=False)


def _table_axes(path: str, shape: tuple[int, ...], split: int) -> tuple[str | None, ...]:
    """How a table is split over the ``model`` axis of the mesh.

    >>> _table_axes("user_embedding/embeddings", (1_000_000, 5), 2)
    ('model', None)
    >>> _table_axes("user_embedding/embeddings", (1_000_001, 8), 2)
    (None, 'model')
    """
    rows, columns = shape
    if rows % split == 0:
        return ("model", None)
    if columns % split == 0:
        return (None, "model")
    raise ConfigError(f"train.distribution.model_parallel: the table {path} ({rows} x {columns}) "
                      f"cannot be split evenly in {split}: neither its rows nor its width is a "
                      f"multiple of {split}; choose an embedding_dim that is")


@contextlib.contextmanager
def outside_distribution() -> Iterator[None]:
    """No Keras distribution while inside: for saving weights in process 0 alone, since
    Keras places the variables it makes while saving on every process's devices, a step the
    other processes would have to take part in."""
    import keras

    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


# -- each process's share of the batches ---------------------------------------------------


class RowShare:
    """This process's contiguous slice of every global batch. A last batch that does not
    split evenly over the ``replicas`` is cut to a multiple of them (at most
    ``replicas - 1`` rows left out of that epoch, other rows each epoch when shuffled).
    Fed to Keras as a ``keras.utils.PyDataset`` (see ``as_dataset``)."""

    def __init__(self, batches: Any, replicas: int, processes: int, process: int) -> None:
        super().__init__()
        self.batches, self.replicas = batches, replicas
        self.processes, self.process = processes, process
        total = sum(part.rows for part in batches.parts)
        last = total - (batches.num_batches - 1) * batches.batch_size
        self.count = batches.num_batches - (1 if last < replicas else 0)

    @property
    def num_batches(self) -> int:
        return self.count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple:
        batch = self.batches[index]
        rows = len(next(iter(batch[0].values())))
        share = (rows - rows % self.replicas) // self.processes
        start = self.process * share
        return tuple({name: values[start:start + share] for name, values in arrays.items()}
                     for arrays in batch)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)


class PartShare(RowShare):
    """A streamed run's share in a group: process ``i`` trains on cached parts ``i``,
    ``i + n``, ... in batches of ``batch_size / n`` rows, as many per epoch as the process
    with the fewest rows can fill, so every process takes the same number of steps."""

    def __init__(self, batches: Any, processes: int, process: int) -> None:
        size = batches.batch_size // processes
        shares = [batches.parts[index::processes] for index in range(processes)]
        rows = [sum(part.rows for part in share) for share in shares]
        own = type(batches)(shares[process], size, batches.seed, batches.shuffle, batches.epoch)
        super().__init__(own, 1, 1, 0)
        self.count = min(count // size for count in rows)
        if self.count == 0:
            raise DataError(f"the training data has {len(batches.parts)} cached parts; dealt out to "
                            f"{processes} processes, the smallest share ({min(rows)} rows) holds no "
                            f"batch of {size} rows: lower train.part_rows, or use fewer processes")


@functools.cache
def as_dataset(share: type) -> type:
    """``share`` (``RowShare`` or ``PartShare``) as a ``keras.utils.PyDataset``, the kind of
    input Keras takes batches from; made on first use, so importing this module leaves
    Keras unloaded."""
    import keras

    return type(share.__name__, (share, keras.utils.PyDataset), {"__doc__": share.__doc__})
