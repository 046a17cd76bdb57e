"""TFRecord framing and per-record gzip members, checked against TensorFlow's and Beam's readers."""

from __future__ import annotations

import gzip
import os

import pytest

from medflow.components.ingest.tfrecord import frame_record, gzip_record

RECORDS = [b"", b"x", os.urandom(300), b"medflow " * 500, bytes(range(256)) * 9]


def test_framing_is_byte_identical_to_tensorflows_writer(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "plain.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for r in RECORDS:
            writer.write(r)
    assert b"".join(frame_record(r) for r in RECORDS) == (tmp_path / "plain.tfrecord").read_bytes()


def test_concatenated_members_read_as_one_gzip_tfrecord_file(tmp_path):
    import tensorflow as tf

    path = tmp_path / "data_tfrecord-00000-of-00001.gz"
    path.write_bytes(b"".join(gzip_record(r) for r in RECORDS))
    got = [t.numpy() for t in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
    assert got == RECORDS
    assert gzip.decompress(path.read_bytes()) == b"".join(frame_record(r) for r in RECORDS)


def test_beam_reads_concatenated_members(tmp_path):
    """TFX StatisticsGen and Transform read ExampleGen shards with Beam's ReadFromTFRecord."""
    import apache_beam as beam
    from apache_beam.io.tfrecordio import ReadFromTFRecord
    from apache_beam.testing.util import assert_that, equal_to

    path = tmp_path / "data_tfrecord-00000-of-00001.gz"
    path.write_bytes(b"".join(gzip_record(r) for r in RECORDS))
    with beam.Pipeline() as p:
        assert_that(p | ReadFromTFRecord(str(path)), equal_to(RECORDS))


def test_a_corrupted_record_is_detected_by_its_crc(tmp_path):
    import tensorflow as tf

    framed = bytearray(frame_record(b"pixels" * 50))
    framed[20] ^= 0xFF  # inside the data
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(bytes(framed)))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path), compression_type="GZIP"))
