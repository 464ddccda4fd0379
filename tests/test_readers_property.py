"""The data readers on damaged files (hypothesis): random bytes, and valid files truncated or with
bytes overwritten, either give data or raise VaekitError (a one-line CLI error): never another
exception, a warning (pyproject makes warnings errors) or an attempt to allocate what a header
claims."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit import VaekitError
from vaekit.sources import Raw, read_idx, read_user


def npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(4, 3))
    return buf.getvalue()


def npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.arange(24, dtype=np.uint8).reshape(6, 4), y=np.arange(6) % 2)
    return buf.getvalue()


def idx_bytes() -> bytes:
    return b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (3, 2, 2)) + bytes(range(12))


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(buf, format=fmt)
    return buf.getvalue()


VALID = {  # suffix -> a small valid file of that kind
    ".npy": npy_bytes(), ".npz": npz_bytes(), ".csv": b"a,b,label\n1,2,x\n3,4.5,y\n-1e3,0,x\n",
    ".gz": gzip.compress(idx_bytes()), ".idx": idx_bytes(), ".png": image_bytes("PNG"),
    ".jpg": image_bytes("JPEG"),
}


def damaged(valid: bytes):
    """Random bytes, or the valid file cut short and/or with some bytes overwritten."""
    edits = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=8)
    mutated = st.tuples(st.integers(0, len(valid)), edits).map(lambda a: mutate(valid, *a))
    return st.one_of(st.binary(max_size=600), mutated)


def mutate(valid: bytes, cut: int, edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(valid)
    for i, v in edits:
        data[i] = v
    return bytes(data[:cut] if cut < len(data) else data)


def read(suffix: str, data: bytes, folder: Path, option: str | None):
    if suffix in (".gz", ".idx"):
        path = folder / f"t10k-images-idx3-ubyte{suffix if suffix == '.gz' else ''}"
        path.write_bytes(data)
        return read_idx(path)
    if suffix in (".png", ".jpg"):
        (folder / "imgs").mkdir()
        (folder / "imgs" / f"a{suffix}").write_bytes(data)
        return read_user(str(folder / "imgs"), None, None if option is None else 4)
    (folder / f"x{suffix}").write_bytes(data)
    return read_user(str(folder / f"x{suffix}"), option, None)


@pytest.mark.parametrize("suffix", sorted(VALID))
def test_valid_files_are_read(suffix):
    with tempfile.TemporaryDirectory() as d:
        got = read(suffix, VALID[suffix], Path(d), "label" if suffix == ".csv" else None)
    assert isinstance(got, Raw | np.ndarray)


@pytest.mark.parametrize("suffix", sorted(VALID))
def test_damaged_files_give_data_or_a_vaekit_error(suffix):
    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=damaged(VALID[suffix]), option=st.sampled_from([None, "label", "0"]))
    def check(data, option):
        with tempfile.TemporaryDirectory() as d:
            try:
                got = read(suffix, data, Path(d), option)
            except VaekitError as e:
                assert "\n" not in str(e)  # the CLI prints it as one line
                return
        assert isinstance(got, Raw | np.ndarray)
    check()
