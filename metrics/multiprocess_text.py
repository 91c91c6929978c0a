"""Multiprocess exposition of counters and histograms, incremental between scrapes.

prometheus_client's MultiProcessCollector re-reads every file from scratch at each
scrape, parses the JSON key of every sample, builds Metric objects, and
`generate_latest` then validates and escapes every label of every sample again: with a
thousand tenants' series written by three workers that is ~70,000 lines and several
seconds per scrape (docs/BENCHMARKS.md). The result only changes in its numbers.

This renderer keeps what does not change between scrapes, per process:

- per file, the byte offset of each sample's value (samples are only ever appended to
  a file, never moved), so a scrape parses only the entries added since the last one
  and otherwise reads doubles at known offsets;
- per sample, its series (family, sample name, labels) and its rendered
  `name{label="value",...} ` prefix, escaped once.

The output is the same text prometheus_client produces for these families (same
merging: counters and histogram buckets summed over processes, buckets made
cumulative, `_count` from the buckets), checked by metrics/tests/test_multiprocess_text.py.
Gauges (whose merge depends on their multiprocess mode) and summaries are left to
prometheus_client.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

FAST_TYPES = ("counter", "histogram")
_INT = struct.Struct("i")
_DOUBLE = struct.Struct("d")


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels) + "}"


@dataclass
class _Family:
    name: str
    typ: str
    documentation: str
    # counters: sample name + labels -> series index
    samples: dict[tuple[str, tuple], int] = field(default_factory=dict)
    # histograms: labels without `le` -> {le: series index}, and -> `_sum` series index
    buckets: dict[tuple, dict[float, int]] = field(default_factory=dict)
    sums: dict[tuple, int] = field(default_factory=dict)
    # What to print, rebuilt only when a series is added: per histogram label set, the
    # bucket indices in `le` order with their line prefixes, and the _count/_sum ones.
    plan: list | None = None


@dataclass
class _FileState:
    identity: tuple[int, int]  # (device, inode): a recreated file is read afresh
    parsed_until: int = 8
    positions: list[int] = field(default_factory=list)  # value offsets
    series: list[int] = field(default_factory=list)  # series index of each offset


class MultiProcessTextRenderer:
    """Renders the counter and histogram files of one multiprocess directory."""

    def __init__(self, path: str):
        self._path = path
        self._lock = threading.Lock()
        self._files: dict[str, _FileState] = {}
        self._families: dict[str, _Family] = {}
        self._series_by_key: dict[str, int] = {}
        self._series_by_identity: dict[tuple[str, str, tuple], int] = {}
        self._prefixes: list[str] = []  # rendered `name{labels} ` of each series
        self._series_count = 0

    def render(self) -> str:
        with self._lock:
            totals, seen = self._read_totals()
            return self._text(totals, seen)

    # --- reading -----------------------------------------------------------------------

    def _read_totals(self) -> tuple[list[float], bytearray]:
        """The sum over files of each series, and which series some file holds now."""
        names = sorted(
            name
            for name in os.listdir(self._path)
            if name.endswith(".db") and name.split("_", 1)[0] in FAST_TYPES
        )
        values: list[tuple[list[int], list[int], bytes]] = []
        for name in names:
            path = os.path.join(self._path, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
                    stat = os.fstat(handle.fileno())
            except FileNotFoundError:
                continue
            if len(data) < 8:
                continue
            state = self._files.get(name)
            identity = (stat.st_dev, stat.st_ino)
            used = _INT.unpack_from(data, 0)[0]
            if state is None or state.identity != identity or used < state.parsed_until:
                state = self._files[name] = _FileState(identity)
            self._parse_new_entries(name.split("_", 1)[0], state, data, used)
            values.append((state.positions, state.series, data))
        totals = [0.0] * self._series_count
        seen = bytearray(self._series_count)
        unpack = _DOUBLE.unpack_from
        for positions, series, data in values:
            for position, index in zip(positions, series, strict=True):
                totals[index] += unpack(data, position)[0]
                seen[index] = 1
        return totals, seen

    def _parse_new_entries(self, typ: str, state: _FileState, data: bytes, used: int) -> None:
        # Layout (prometheus_client.mmap_dict): 8-byte header holding `used`, then
        # entries of int32 key length, the UTF-8 key padded to 8 bytes, value, timestamp.
        pos = state.parsed_until
        while pos < used:
            length = _INT.unpack_from(data, pos)[0]
            key = data[pos + 4 : pos + 4 + length].decode("utf-8")
            pos += 4 + length + (8 - (length + 4) % 8)
            state.positions.append(pos)
            state.series.append(self._series_for(typ, key))
            pos += 16
        state.parsed_until = pos

    def _series_for(self, typ: str, key: str) -> int:
        index = self._series_by_key.get(key)
        if index is not None:
            return index
        family_name, sample_name, labels, documentation = json.loads(key)
        labels_key = tuple(sorted(labels.items()))
        identity = (family_name, sample_name, labels_key)
        index = self._series_by_identity.get(identity)
        if index is None:
            index = self._new_series(typ, family_name, sample_name, labels_key, documentation)
            self._series_by_identity[identity] = index
        self._series_by_key[key] = index
        return index

    def _new_series(self, typ, family_name, sample_name, labels_key, documentation) -> int:
        family = self._families.get(family_name)
        if family is None:
            family = self._families[family_name] = _Family(family_name, typ, documentation)
        family.plan = None
        index = self._series_count
        self._series_count += 1
        self._prefixes.append("")
        if typ == "histogram":
            le = dict(labels_key).get("le")
            without_le = tuple(item for item in labels_key if item[0] != "le")
            if le is not None:
                family.buckets.setdefault(without_le, {})[float(le)] = index
            elif sample_name.endswith("_sum"):
                family.sums[without_le] = index
            # A stored `_count` is ignored: like prometheus_client, it is the last bucket.
        else:
            family.samples[(sample_name, labels_key)] = index
            self._prefixes[index] = sample_name + labels_text(labels_key) + " "
        return index

    # --- writing -----------------------------------------------------------------------

    def _text(self, totals: list[float], seen: bytearray) -> str:
        out: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            # Series of files that are gone (a wiped directory) are not shown, as in
            # prometheus_client; a family with none left is not shown at all.
            lines = (
                self._histogram_lines(family, totals, seen)
                if family.typ == "histogram"
                else [
                    self._prefixes[i] + floatToGoString(totals[i]) + "\n"
                    for i in family.samples.values()
                    if seen[i]
                ]
            )
            if not lines:
                continue
            # As generate_latest writes the text format: a counter is named with `_total`.
            shown = name + "_total" if family.typ == "counter" else name
            out.append(f"# HELP {shown} {escape_help(family.documentation)}\n")
            out.append(f"# TYPE {shown} {family.typ}\n")
            out.extend(lines)
        return "".join(out)

    def _histogram_lines(self, family: _Family, totals: list[float], seen: bytearray) -> list:
        if family.plan is None:
            family.plan = [self._histogram_plan(family, labels) for labels in family.buckets]
        out: list[str] = []
        for indices, prefixes, count_prefix, sum_index, sum_prefix in family.plan:
            if not any(seen[i] for i in indices):
                continue
            accumulated = 0.0
            for index, prefix in zip(indices, prefixes, strict=True):
                accumulated += totals[index]
                out.append(prefix + floatToGoString(accumulated) + "\n")
            out.append(count_prefix + floatToGoString(accumulated) + "\n")
            if sum_index is not None:
                out.append(sum_prefix + floatToGoString(totals[sum_index]) + "\n")
        return out

    @staticmethod
    def _histogram_plan(family: _Family, labels: tuple) -> tuple:
        by_le = family.buckets[labels]
        bounds = sorted(by_le)
        prefixes = [
            f"{family.name}_bucket{labels_text((*labels, ('le', floatToGoString(le))))} "
            for le in bounds
        ]
        return (
            [by_le[le] for le in bounds],
            prefixes,
            f"{family.name}_count{labels_text(labels)} ",
            family.sums.get(labels),
            f"{family.name}_sum{labels_text(labels)} ",
        )
