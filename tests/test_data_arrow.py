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


def test_record_batches_are_bounded_in_bytes(tmp_path):
    """A batch is cut once its rows hold batch_bytes of images and texts, whatever batch_rows says; a single row
    beyond binary's 2 GiB is an error naming it, before anything is written."""
    path = tmp_path / "d_train.arrow"
    big = [{**r, "image": bytes(1000)} for r in rows(10)]
    with ArrowWriter(path, batch_rows=1024, batch_bytes=2500) as w:
        for r in big:
            w.write(r)
    reader = pa.ipc.RecordBatchFileReader(pa.memory_map(str(path)))
    assert [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)] == [2, 2, 2, 2, 2]
    assert read_arrow(path).to_pylist() == big

    class Huge(bytes):  # reports 2 GiB without holding it
        def __len__(self):
            return 2**31

    with pytest.raises(ValueError, match=r"sample 'x_0.jpg' holds 2.00 GiB"):
        with ArrowWriter(tmp_path / "h_train.arrow") as w:
            w.write({**rows(1)[0], "image": Huge()})
    assert not (tmp_path / "h_train.arrow").exists()


# Writes 1,100 rows of 2 MiB (2.15 GiB of image bytes, more than one `binary` array holds) from a generator that
# reuses one bytes object, then reads them back through ArrowDataset; prints how far the process's peak memory rose
# above what its imports took.
_OVER_2_GIB = r"""
import io, json, resource, sys
from PIL import Image
from emmcil.data.arrow import write_arrow
from emmcil.data.dataset import ArrowDataset
from emmcil.data.tokenizer import get_tokenizer
from emmcil.data.transforms import pixelbert_transform

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # torch and friends imported
buf = io.BytesIO(); Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
image = buf.getvalue() + bytes(2 * 2**20 - len(buf.getvalue()))  # decoders stop at the JPEG's end marker
n, path = 1100, sys.argv[1]
write_arrow(({"image": image, "text": [f"photo {i}"], "label": i % 3, "image_id": f"{i}.jpg", "split": "train"}
             for i in range(n)), path)
data = ArrowDataset(path, get_tokenizer(), pixelbert_transform(64, 16), 8)
last = data[n - 1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before
# the content fingerprint reads every byte through the memory map: those pages count as resident (clean, file-backed
# and reclaimable), so the peak is taken before it
print(json.dumps({"rows": len(data), "last_bytes": len(data.image_bytes(n - 1)), "shape": list(last["image"].shape),
                  "text": last["raw_text"], "fingerprint": data.fingerprint(), "peak_mib": peak}))
"""


def test_a_split_over_2_gib_is_written_and_streamed_back(tmp_path):
    """A split whose images hold more than 2 GiB (phone photos; the writer used to fail on one record batch of
    them after decoding every image) is written in byte-bounded batches from a generator and read back row by row
    from the memory map, in a process that never holds more than a fraction of it."""
    import json
    import subprocess
    import sys

    path = tmp_path / "big_train.arrow"
    proc = subprocess.run([sys.executable, "-c", _OVER_2_GIB, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["rows"], out["last_bytes"], out["shape"], out["text"]) == (1100, 2 * 2**20, [3, 64, 80], "photo 1099")
    assert path.stat().st_size > 2**31  # 2,200 MiB of images: over what one binary array addresses
    reader = pa.ipc.RecordBatchFileReader(pa.memory_map(str(path)))
    assert reader.num_record_batches >= 9  # 128 rows (256 MiB) a batch
    # measured: +550 MiB (one 256 MiB batch being built and written), against 2,200 MiB of data
    assert out["peak_mib"] < 1024, f"peak memory rose by {out['peak_mib']} MiB for a 2,200 MiB split"
