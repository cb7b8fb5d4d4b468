"""How much memory a streamed run may hold, and the part and sample sizes that fit in it.

Beside what the process holds anyway (the interpreter, Keras, the backend, the compiled
model), a streamed run holds rows of data in four phases, one after the other:

- sampling: the fitting sample grows to ``fit_rows`` rows while parts of ``part_rows``
  rows are read one at a time;
- fitting: the sample, and what the inputs' and outputs' ``fit`` work with;
- encoding: one part as read, its training rows taken out, and their encoding;
- training: two encoded parts of training rows and two of validation rows at a time.

So its memory grows with ``part_rows`` and ``fit_rows``, never with the file. When the config
leaves them out, they are sized to ``train.memory_mb`` (by default ``SHARE`` of the memory
available when the run starts) from what a row costs, measured on the first rows of the data:
its Arrow bytes as read, its encoded bytes, and the memory that fitting and encoding them
took at their peak (numpy's and Python's through ``tracemalloc``, Arrow's through a proxy of
its memory pool). Fitting usually dominates: a vector of float32 numbers takes 9 times its
own bytes while its mean and spread are computed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import math
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from plait.errors import ConfigError, PlaitError
from plait.parts import read_json, write_json
from plait.spec import Spec, Train

MEGABYTE = 1 << 20
SHARE = 0.5
"""Of the memory available when a streamed run starts, the share its data may take unless
``train.memory_mb`` says otherwise; the rest is left for what the run adds besides (the model
compiled, the allocators' slack) and for the machine's other work."""
PROBE_ROWS = 1024
"""Rows fitted and encoded to measure what a row costs."""
MIN_PART_ROWS = 1024
MIN_FIT_ROWS = 4096
READ_ROWS = 8192
"""Rows Parquet decodes at a time: its reader holds several times the rows it decodes, so a
part is gathered from small reads, not decoded whole."""
READER_COPIES = 5
"""What the Parquet reader holds, in rows of ``READ_ROWS`` as read (measured on a vector column)."""
READ_COPIES = 3
"""A part is held up to three times while it is encoded: the reads it is gathered from, the
part itself, and its training rows taken out."""
TRAIN_COPIES = 2
"""``Batches`` holds two parts at a time, and the validation batches two of theirs."""
SLACK = 0.1
FIXED_SLACK = 8 * MEGABYTE
"""Left out of the budget when sizing: the allocators' slack (freed memory not reused to the
byte) and what the reader keeps between parts: sized to the whole budget, the peaks of a
run's data phases above the process before reading came to 1 % to 9 % over budgets of 64 to
512 MiB, and 11 MiB over one of 32 MiB (docs/benchmarks.md)."""
UNLIMITED = 1 << 60
"""A cgroup limit at least this large means no limit (cgroup v1 writes 2^63 rounded to pages)."""


@dataclass(frozen=True)
class RowCost:
    """Bytes one row takes: as Arrow read it, encoded, and at the peak of fitting and of
    encoding it (the encoded arrays included)."""

    raw: float
    encoded: float
    fitting: float
    encoding: float

    def part_row(self) -> float:
        """Bytes a row of a part takes at the peak of encoding it or of training on it."""
        return max(READ_COPIES * self.raw + self.encoding, TRAIN_COPIES * self.encoded)

    def reader(self, part_rows: int) -> float:
        """Bytes the Parquet reader holds, reading ``READ_ROWS`` rows at a time at most."""
        return READER_COPIES * min(part_rows, READ_ROWS) * self.raw

    def reading(self, part_rows: int) -> float:
        """Bytes held by reading parts of ``part_rows`` rows, before they are encoded."""
        return READ_COPIES * self.raw * part_rows + self.reader(part_rows)

    def parts(self, part_rows: int) -> float:
        """Bytes held at the peak of encoding or of training on parts of ``part_rows`` rows."""
        return part_rows * self.part_row() + self.reader(part_rows)

    def most_part_rows(self, room: float) -> float:
        """The most rows a part may have for ``parts`` to fit in ``room`` bytes."""
        beyond_reads = (room - self.reader(READ_ROWS)) / self.part_row()
        if beyond_reads >= READ_ROWS:
            return beyond_reads
        return room / (self.part_row() + READER_COPIES * self.raw)

    def sample_row(self) -> float:
        """Bytes a row of the fitting sample takes while it is fitted."""
        return self.raw + self.fitting

    def peak(self, part_rows: int, fit_rows: int) -> float:
        """Bytes held at the peak of the run's phases with these sizes: for a 128-number
        float32 vector, a number and a category (measured), fitting 49,152 rows.

        >>> vector_row = RowCost(raw=529, encoded=529, fitting=4673, encoding=3639)
        >>> round(vector_row.peak(part_rows=16384, fit_rows=49152) / MEGABYTE)
        244
        >>> round(49152 * vector_row.sample_row() / MEGABYTE)
        244
        """
        sampling = fit_rows * self.raw + self.reading(part_rows)
        return max(sampling, fit_rows * self.sample_row(), self.parts(part_rows))


def plan(budget: float, cost: RowCost, part_rows: int | None = None,
         fit_rows: int | None = None) -> tuple[int, int]:
    """``(part_rows, fit_rows)`` whose peaks fit in ``budget`` bytes: parts get up to half of
    it, the fitting sample what the parts leave while it is gathered and all of it while it is
    fitted; a size that is given is kept. Sizes are rounded down to 2^k or 1.5 x 2^k rows, so
    that a budget changing a little does not change them (the cache is keyed by them), and
    kept between ``MIN_PART_ROWS`` / ``MIN_FIT_ROWS`` and the defaults (65,536 / 200,000).

    A row of a 128-number float32 vector, a number and a category (measured):

    >>> vector_row = RowCost(raw=529, encoded=529, fitting=4673, encoding=3639)
    >>> plan(256 * MEGABYTE, vector_row)
    (16384, 40960)
    >>> plan(64 * 1024 * MEGABYTE, vector_row)
    (65536, 200000)
    >>> plan(256 * MEGABYTE, vector_row, part_rows=4096)
    (4096, 40960)
    """
    budget = usable(budget)
    if part_rows is None:
        part_rows = _between(cost.most_part_rows(budget / 2), MIN_PART_ROWS, _default("part_rows"))
    if fit_rows is None:
        gathering = (budget - cost.reading(part_rows)) / cost.raw
        fit_rows = _between(min(gathering, budget / cost.sample_row()), MIN_FIT_ROWS, _default("fit_rows"))
    return part_rows, fit_rows


def usable(budget: float) -> float:
    """The bytes of a budget that rows may take: less the slack (``SLACK``, ``FIXED_SLACK``).

    >>> usable(256 * MEGABYTE) / MEGABYTE
    222.4
    """
    return max(0.0, budget * (1 - SLACK) - FIXED_SLACK)


def _default(key: str) -> int:
    return Train.model_fields[key].default


STEPS = (7, 6, 5, 4)
"""Sizes are rounded down to 2^k x 7/4, 6/4, 5/4 or 1: a budget changing a little does not
change them (the cache is keyed by them), and at most a fifth of the budget is left unused."""


def _between(rows: float, least: int, most: int) -> int:
    """``rows`` rounded down to a size of ``STEPS``, kept between ``least`` and ``most``.

    >>> [_between(rows, 1024, 200_000) for rows in (10, 5000, 7000, 150_000, 10**7)]
    [1024, 4096, 6144, 131072, 200000]
    """
    if rows >= most:
        return most
    return next((size for size in smaller(int(rows) + 1, least)), least)


def smaller(rows: int, least: int) -> list[int]:
    """The sizes ``plan`` rounds to, from just below ``rows`` down to ``least``.

    >>> smaller(65536, 20000)
    [57344, 49152, 40960, 32768, 28672, 24576, 20480]
    """
    sizes, power = [], 1 << max(0, int(math.log2(max(rows, 1))) - 2)
    while power * STEPS[0] >= least:
        sizes += [power * step for step in STEPS if least <= power * step < rows]
        power //= 2
    return sizes


def sized(spec: Spec, costing: Callable[[], RowCost | None]) -> tuple[Train, float | None]:
    """``spec.train`` with the ``part_rows`` and ``fit_rows`` it leaves out sized to the memory
    budget of a streamed run, from what a row costs (``costing`` measures it, only when some
    size is to be found), and that budget in bytes (None where no budget is known: the
    defaults are kept)."""
    train = spec.train
    unset = {"part_rows", "fit_rows"} - train.model_fields_set
    budget = budget_bytes(train)
    if not unset or budget is None:
        return train, budget
    cost = costing()
    if cost is None:
        return train, budget
    given = {key: getattr(train, key) for key in ("part_rows", "fit_rows") if key not in unset}
    part_rows, fit_rows = plan(budget, cost, **given)
    least = cost.peak(given.get("part_rows", MIN_PART_ROWS), given.get("fit_rows", MIN_FIT_ROWS))
    if train.memory_mb is not None and least > usable(budget):
        needed = (least + FIXED_SLACK) / (1 - SLACK)
        raise ConfigError(
            f"config: invalid config\n  train.memory_mb: found {train.memory_mb:g}; expected at least "
            f"{math.ceil(needed / MEGABYTE)} for rows of this data ({cost.raw:,.0f} bytes as read, "
            f"{cost.fitting:,.0f} while fitted, {cost.encoding:,.0f} while encoded), or smaller "
            "train.part_rows and train.fit_rows")
    return train.model_copy(update={"part_rows": part_rows, "fit_rows": fit_rows}), budget


def budget_bytes(train: Train) -> float | None:
    """The bytes a streamed run's data may take: ``train.memory_mb``, or ``SHARE`` of
    ``available_bytes()``; None where neither is known.

    >>> budget_bytes(Train(memory_mb=300)) / MEGABYTE
    300.0
    """
    if train.memory_mb is not None:
        return train.memory_mb * MEGABYTE
    available = available_bytes()
    return None if available is None else SHARE * available


def cached_row_cost(path: Path, measure: Callable[[], RowCost | None]) -> RowCost | None:
    """What ``measure`` finds a row costs, measured once per data and preprocessing config
    (``path`` names both): a later run sizes its parts the same way without fitting or
    encoding anything (a pretrained encoder's backbone would run again)."""
    if path.is_file():
        return RowCost(**read_json(path))
    cost = measure()
    if cost is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, dataclasses.asdict(cost))
    return cost


def row_cost(table: Any, costs: Callable[[Any], tuple[float, float, float]]) -> RowCost | None:
    """What a row of ``table`` (a source's first ``PROBE_ROWS`` rows) costs, from the
    ``costs`` of all its rows and of an eighth of them (bytes encoded, peak while fitting,
    peak while encoding): the difference per row, so that what a first call costs once
    (imports, caches) is not counted per row. None for no rows. Data whose first rows cannot
    be fitted (a label seen alone) is priced as the dearest input measured: 9 times its Arrow
    bytes to fit, 7 to encode."""
    if table is None or not table.num_rows:
        return None
    rows, raw = table.num_rows, table.arrow.nbytes / table.num_rows
    few = rows // 8
    try:
        small, large = (costs(table.take(np.arange(count))) for count in (few, rows))
    except PlaitError:
        return RowCost(raw=raw, encoded=2 * raw, fitting=9 * raw, encoding=7 * raw)
    if few < 64:  # too few rows to tell a row's cost from a call's: all of it is counted per row
        small, few = (0.0, 0.0, 0.0), 0
    encoded, fitting, encoding = (max(0.0, (big - little) / (rows - few))
                                  for big, little in zip(large, small, strict=True))
    return RowCost(raw=raw, encoded=encoded, fitting=fitting, encoding=encoding)


class Peak:
    """The most bytes allocated at once inside a ``traced`` block."""

    peak: int = 0


@contextlib.contextmanager
def traced() -> Iterator[Peak]:
    """Trace the block's numpy and Python allocations (``tracemalloc``) and Arrow's (a proxy
    of its default pool, which records its own peak); their peaks added up."""
    found = Peak()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    pool = pa.default_memory_pool()
    proxy = pa.proxy_memory_pool(pool)
    pa.set_memory_pool(proxy)
    try:
        yield found
    finally:
        pa.set_memory_pool(pool)
        found.peak = tracemalloc.get_traced_memory()[1] - before + proxy.max_memory()
        if started:
            tracemalloc.stop()


def release_memory() -> None:
    """Hand memory that was freed back to the system: Arrow's allocator keeps what a batch
    freed, and glibc's what numpy freed in arrays under its mmap threshold; neither can
    reuse the other's, so what one phase freed would add to the next phase's peak."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None).malloc_trim  # glibc only
    return None


def available_bytes(meminfo: Path = Path("/proc/meminfo"), root: Path = Path("/sys/fs/cgroup"),
                    membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The memory this process may still take: the lesser of the kernel's ``MemAvailable``
    and the room under each memory cgroup limit above the process; None where neither is
    known (not Linux)."""
    known = [room for room in (mem_available(meminfo), cgroup_room(root, membership)) if room is not None]
    return min(known) if known else None


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}
"""Per cgroup version: the limit, the usage, and the memory.stat key of the page cache that
the kernel reclaims first (left out of the usage, as container runtimes do)."""


def cgroup_room(root: Path = Path("/sys/fs/cgroup"),
                membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The least room left under the memory limits of this process's cgroup and of every
    cgroup above it (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None without a limit.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "self").write_text("0::/job\\n")
    8
    >>> (folder / "job").mkdir()
    >>> for name, text in {"memory.max": "943718400", "memory.current": "400000000",
    ...                    "memory.stat": "anon 300000000\\ninactive_file 100000000\\n"}.items():
    ...     _ = (folder / "job" / name).write_text(text)
    >>> cgroup_room(folder, folder / "self")  # 900 MiB less the 300 MB not reclaimable
    643718400
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            rooms += _rooms(root, path, CGROUP_FILES[2])
        elif "memory" in controllers.split(","):
            rooms += _rooms(root / "memory", path, CGROUP_FILES[1])
    return min(rooms) if rooms else None


def _rooms(mount: Path, path: str, files: tuple[str, str, str]) -> list[int]:
    """The room under each limit from the cgroup at ``path`` up to the mount's root (inside a
    container the root is the container's own cgroup)."""
    limit_file, usage_file, reclaimable = files
    folder, rooms = mount / path.strip("/"), []
    while True:
        limit = _number(folder / limit_file)
        if limit is not None and limit < UNLIMITED:
            used = (_number(folder / usage_file) or 0) - _stat(folder / "memory.stat", reclaimable)
            rooms.append(max(0, limit - max(0, used)))
        if folder == mount or mount not in folder.parents:
            return rooms
        folder = folder.parent


def _number(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None  # missing, unreadable, or "max"


def _stat(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0
