"""Arrow IPC files: schema, atomic writes, column checks."""
import pyarrow as pa
import pytest

from emmcil.data.arrow import REQUIRED_COLUMNS, ArrowFormatError, ArrowWriter, read_arrow, write_arrow


def rows(n):
    return [{"image": bytes([i]) * 5, "text": [f"caption {i}", "second"], "label": i % 3, "image_id": f"x_{i}.jpg",
             "split": "train"} for i in range(n)]


def test_round_trip_in_several_record_batches(tmp_path):
    path = tmp_path / "d_train.arrow"
    with ArrowWriter(path, batch_rows=4) as w:
        for r in rows(10):
            w.write(r)
    assert w.num_rows == 10
    reader = pa.ipc.RecordBatchFileReader(pa.memory_map(str(path)))
    assert reader.num_record_batches == 3  # 4 + 4 + 2: streamed, not built in memory at once
    table = read_arrow(path)
    assert table.column_names == list(REQUIRED_COLUMNS)
    assert table.to_pylist() == rows(10)


def test_missing_column_error_names_file_and_column(tmp_path):
    path = tmp_path / "bad.arrow"
    table = pa.table({"image": [b"x"], "text": [["t"]], "label": [0], "split": ["train"]})
    with pa.OSFile(str(path), "wb") as sink, pa.RecordBatchFileWriter(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ArrowFormatError, match=r"bad\.arrow.*image_id"):
        read_arrow(path)


def test_not_arrow_and_absent_files(tmp_path):
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"definitely not arrow")
    with pytest.raises(ArrowFormatError, match="junk.arrow"):
        read_arrow(junk)
    with pytest.raises(FileNotFoundError, match="absent.arrow"):
        read_arrow(tmp_path / "absent.arrow")


def test_interrupted_writer_leaves_no_file(tmp_path):
    path = tmp_path / "d_train.arrow"
    write_arrow(rows(2), path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ArrowWriter(path) as w:
            w.write(rows(1)[0])
            raise RuntimeError("crash")
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d_train.arrow"]  # no temporary left behind
