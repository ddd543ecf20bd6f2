"""Capture as Parquet: records round-trip with their types, legacy JSON lines still read,
the batch step's columnar writer, and the columnar reader for the drift job."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import numpy as np
import pytest

from sluice.serving.capture import CaptureWriter, capture_records, partition_prefix
from sluice.serving.capture_reader import iter_capture
from tests.unit.test_capture import BUCKET, T0, all_keys, put_window, rows
from tests.unit.test_capture import s3 as s3  # the fixture: a moto S3 with the capture bucket

MIXED = [
    {"age": 41, "income": 1234.5, "city": "Oslo", "member": True, "note": None},
    {"age": 7, "income": float("nan"), "city": "Rome", "member": False, "note": "x"},
]


def read_window(**kwargs) -> list[dict]:
    window = {"start": T0 - timedelta(hours=1), "end": T0 + timedelta(hours=1)}
    return [r for c in iter_capture(BUCKET, **{**window, **kwargs}) for r in c]


@pytest.mark.parametrize("predictions", [[0, 1], ["approve", "decline"], [0.25, 1e-9]])
def test_parquet_round_trip_gives_back_the_records_with_their_types(s3, predictions):
    # Given mixed-type features and labels, numbers or scores, written as Parquet
    records = capture_records(
        request_id="r",
        model="m",
        version=3,
        rows=MIXED,
        predictions=predictions,
        probabilities=[0.9, None],
        ts=T0,
    )
    assert CaptureWriter(bucket_name=BUCKET).put(records) == 2
    # When read back
    read = read_window(model="m", version=3)
    # Then every record is what capture_records made (NaN was stored as null)
    assert read == [{**records[0]}, {**records[1], "features": {**records[1]["features"], "income": None}}]
    assert type(read[0]["features"]["age"]) is int and type(read[0]["prediction"]) is type(predictions[0])


def test_legacy_json_lines_objects_read_back_beside_parquet(s3):
    # Given a JSON-lines object as the writer made them before Parquet, and a Parquet one
    old = capture_records(request_id="old", model="m", version=1, rows=rows(2), predictions=[1, 0], ts=T0)
    legacy = b"".join(json.dumps(r).encode() + b"\n" for r in old)
    s3.put_object(Bucket=BUCKET, Key=partition_prefix("m", 1, T0) + "0-old.jsonl", Body=legacy)
    new = capture_records(request_id="new", model="m", version=1, rows=rows(1), predictions=[1], ts=T0)
    CaptureWriter(bucket_name=BUCKET).put(new)
    # Then both read back in the same shape, in listing order
    assert read_window(model="m", version=1) == old + new


def test_without_pyarrow_the_direct_writer_falls_back_to_json_lines(s3, monkeypatch):
    # Given an environment without pyarrow (the zip scoring flavour)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    records = capture_records(request_id="z", model="m", version=1, rows=rows(2), predictions=[0, 1], ts=T0)
    assert CaptureWriter(bucket_name=BUCKET).put(records) == 2
    (key,) = all_keys(s3)
    assert key.endswith(".jsonl")
    monkeypatch.undo()
    # Then the reader still gives the records back
    assert read_window(model="m", version=1) == records


def test_put_frame_writes_what_put_of_capture_records_writes(s3):
    import pandas as pd

    # Given a batch shard's schema columns, labels and probabilities
    frame = pd.DataFrame({"age": [3, 4, 5], "income": [1.5, np.nan, 2.25], "city": ["a", None, "c"]})
    labels, scores = np.array([0, 1, 1]), np.array([0.1, 0.8, np.nan])
    writer = CaptureWriter(bucket_name=BUCKET)
    # When it is captured column by column
    assert (
        writer.put_frame(
            request_id="run/shard-0",
            model="m",
            version=2,
            features=frame,
            predictions=labels,
            probabilities=scores,
            ts=T0,
        )
        == 3
    )
    # Then it reads back as the records of the row-by-row path (missing values as null)
    expected = capture_records(
        request_id="run/shard-0",
        model="m",
        version=2,
        source="batch",
        ts=T0,
        rows=frame.astype(object).where(frame.notna(), None).to_dict("records"),
        predictions=labels,
        probabilities=scores,
    )
    assert read_window(model="m", version=2) == expected
    assert len(all_keys(s3)) == 1


def test_capture_frames_give_the_features_as_a_typed_frame(s3):
    from sluice.serving.capture_reader import iter_capture_frames

    # Given two requests of mixed features, one legacy JSON-lines object among them
    CaptureWriter(bucket_name=BUCKET).put(
        capture_records(
            request_id="a",
            model="m",
            version=1,
            rows=MIXED,
            predictions=[1, 0],
            probabilities=[0.75, None],
            ts=T0,
        )
    )
    legacy = capture_records(request_id="b", model="m", version=1, rows=rows(1), predictions=[1], ts=T0)
    s3.put_object(
        Bucket=BUCKET, Key=partition_prefix("m", 1, T0) + "zz.jsonl", Body=json.dumps(legacy[0]).encode()
    )
    window = {"start": T0 - timedelta(hours=1), "end": T0 + timedelta(hours=1)}
    # When read as frames with the profile's columns
    (chunk,) = iter_capture_frames(BUCKET, model="m", version=1, columns=["age", "income", "city"], **window)
    # Then the features are typed columns in that order and probabilities a float array
    assert list(chunk.features.columns) == ["age", "income", "city"]
    assert chunk.features["age"].tolist() == [41, 7, 0]
    assert chunk.features["city"].tolist() == ["Oslo", "Rome", "Oslo"]
    assert np.isnan(chunk.features["income"].iloc[1]) and chunk.features["income"].iloc[0] == 1234.5
    assert chunk.probability[0] == 0.75 and np.isnan(chunk.probability[1:]).all()
    assert chunk.table.column("request_id").to_pylist() == ["a", "a", "b"]


def test_iter_objects_reads_a_listed_group_with_model_and_version_from_the_key(s3):
    from sluice.serving.capture_reader import capture_keys, iter_objects

    put_window(s3, start=T0, minutes=3, per_minute=2, version=4)
    window = {"start": T0 - timedelta(hours=1), "end": T0 + timedelta(hours=1)}
    listed = [(k, 0) for k in capture_keys(BUCKET, model="credit", version=4, **window)]
    read = [r for c in iter_objects(BUCKET, listed[1:], chunk_rows=3, **window) for r in c]
    assert [(r["request_id"], r["model"], r["version"]) for r in read] == [
        ("v4-1", "credit", 4),
        ("v4-1", "credit", 4),
        ("v4-2", "credit", 4),
        ("v4-2", "credit", 4),
    ]


def test_features_json_writes_each_type_as_json_and_round_trips_exactly():
    import pandas as pd

    from sluice.serving.capture_parquet import features_json

    frame = pd.DataFrame(
        {
            "f": [0.1 + 0.2, 3.0, float("inf"), 1e300, None],
            "n": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "b": [True, False, None, True, False],
            "s": ['say "hi"', "back\\slash", None, "é", "x"],
            "c": pd.Categorical(["a", "b", "a", None, "b"]),
        }
    )
    got = [json.loads(text) for text in features_json(frame).to_pylist()]
    assert got[0] == {"f": 0.30000000000000004, "n": 1, "b": True, "s": 'say "hi"', "c": "a"}
    assert type(got[1]["f"]) is float and got[1]["n"] is None and got[1]["s"] == "back\\slash"
    assert (got[2]["f"], got[3]["f"], got[4]["f"]) == (None, 1e300, None)
    assert (got[2]["b"], got[2]["s"], got[3]["c"]) == (None, None, None)


def test_features_json_escapes_control_characters_through_the_json_encoder():
    import pandas as pd

    from sluice.serving.capture_parquet import features_json

    frame = pd.DataFrame({"note": ["tab\there", "line\nbreak"], "x": [1.5, 2.0]})
    texts = features_json(frame).to_pylist()
    assert [json.loads(t) for t in texts] == [
        {"note": "tab\there", "x": 1.5},
        {"note": "line\nbreak", "x": 2.0},
    ]
    assert all("\n" not in t for t in texts)


def test_features_json_keeps_whole_floats_floats_whatever_their_size():
    import pandas as pd

    from sluice.serving.capture_parquet import features_json

    # Whole values Arrow writes bare ("3") or with an exponent ("1e+15") depending on size
    values = [3.0, -2.0, 0.0, 999_999_999.0, 1e9, 1e10, 12_345_678_901_234.0, 1e15, -1e16, 1e300]
    texts = features_json(pd.DataFrame({"x": values})).to_pylist()
    back = [json.loads(t)["x"] for t in texts]
    assert back == values and all(type(v) is float for v in back)


def test_a_frame_capture_that_fails_to_encode_is_counted_and_never_raises(s3):
    import pandas as pd

    # Given a frame whose answers do not line up with its rows (a scorer's bug)
    writer = CaptureWriter(bucket_name=BUCKET)
    with writer.begin_frame(
        request_id="r", model="m", version=1, features=pd.DataFrame({"x": [1.0, 2.0]})
    ) as pending:
        pending.scored([0, 1, 1])
        # When it is sent, nothing is stored and nothing raises; the rows are counted as lost
        assert pending.send() == 0
    assert writer.failed == 2 and all_keys(s3) == []


def test_a_frame_capture_left_unsent_stores_nothing_and_stops_its_worker(s3):
    import threading

    import pandas as pd

    # Given a capture begun and scored, when the step fails before sending it
    writer = CaptureWriter(bucket_name=BUCKET)
    with (
        pytest.raises(RuntimeError),
        writer.begin_frame(
            request_id="r", model="m", version=1, features=pd.DataFrame({"x": [1.0, 2.0]})
        ) as pending,
    ):
        pending.scored([0, 1])
        raise RuntimeError("the scored shard could not be stored")
    # Then no capture object exists and no capture worker is left running
    assert all_keys(s3) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("capture")]
