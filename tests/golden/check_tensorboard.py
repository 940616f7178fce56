#!/usr/bin/env python3
"""Checks that TensorBoard itself reads Frugal's event files (trainer/tensorboard.h), and prints their scalars.

What it checks, for PATH (an events.out.tfevents.* file, or a directory such as run.out_dir/tb holding them):
  1. every record of every file passes TensorBoard's own TFRecord reader, which verifies the masked CRC-32C of the
     length and of the data (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.PyRecordReader_New raises
     DataLossError on a mismatch), and parses as TensorFlow's Event proto;
  2. the first record of each file is an Event with file_version "brain.Event:2";
  3. TensorBoard's EventAccumulator (the loader behind the Scalars dashboard) finds the same tags with the same
     steps and values as the raw records hold (NaN equal to NaN).
Then it prints every scalar as `tag step value wall_time`. Exit code 0 when all checks pass, 1 otherwise.

It is not part of the test suite (the framework never runs Python); run it by hand after a change to the writer:
  python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install tensorboard
  /tmp/tbvenv/bin/python tests/golden/check_tensorboard.py runs/demo/tb
"""

import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def event_files(path):
    if os.path.isfile(path):
        return [path]
    return sorted(
        os.path.join(path, name) for name in os.listdir(path) if name.startswith("events.out.tfevents.")
    )


def raw_events(path):
    """Every record of one file through TensorBoard's CRC-checking reader, parsed as Event."""
    reader = pywrap_tensorflow.PyRecordReader_New(path, 0, None, None)
    events = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return events
        event = event_pb2.Event()
        event.ParseFromString(reader.record())
        events.append(event)


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    files = event_files(sys.argv[1])
    if not files:
        print(f"no events.out.tfevents.* file in {sys.argv[1]}", file=sys.stderr)
        return 1
    failures = []
    raw = {}
    for path in files:
        events = raw_events(path)
        print(f"{path}: {len(events)} records, CRCs verified by TensorBoard's reader")
        if not events or events[0].WhichOneof("what") != "file_version":
            failures.append(f"{path}: the first record is not a file_version Event")
        elif events[0].file_version != "brain.Event:2":
            failures.append(f"{path}: file_version is {events[0].file_version!r}, not 'brain.Event:2'")
        for event in events[1:]:
            for value in event.summary.value:
                raw.setdefault(value.tag, []).append((event.step, value.simple_value, event.wall_time))

    accumulator = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    tags = sorted(accumulator.Tags()["scalars"])
    if tags != sorted(raw):
        failures.append(f"EventAccumulator found tags {tags}, the records hold {sorted(raw)}")
    for tag in tags:
        loaded = [(s.step, s.value, s.wall_time) for s in accumulator.Scalars(tag)]
        want = raw.get(tag, [])
        if len(loaded) != len(want) or not all(
            a[0] == b[0] and same(a[1], b[1]) and a[2] == b[2] for a, b in zip(loaded, want)
        ):
            failures.append(f"{tag}: EventAccumulator read {loaded}, the records hold {want}")
        for step, value, wall_time in loaded:
            print(f"{tag} {step} {value!r} {wall_time:.3f}")

    for failure in failures:
        print("FAILED:", failure, file=sys.stderr)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
