"""``pfbench fetch`` against a local HTTP server with range requests: download, resume, bad checksum, offline,
the lock file; the Hugging Face path offline."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pfbench.fetch as F
from pfbench import PfbenchError
from pfbench.fetch import CATALOGUE, LOCK, Item, check_lock, fetch, fetch_item, items, provider

DATA = bytes(range(256)) * 1200  # 300 KiB, not a multiple of the chunk size


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with HEAD, GET and single ``Range: bytes=a-b`` requests; logs Range headers.
    ``drop_after``: the first GET sends that many body bytes (of the announced length), then closes."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.ranges, self.drop_after = files, [], None  # type: ignore[var-annotated]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _body(self, head: bool) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng and not head:
            self.server.ranges.append(rng)
            a, b = rng.removeprefix("bytes=").split("-")
            start, end, status = int(a), min(int(b) if b else len(data) - 1, len(data) - 1), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        body = data[start:end + 1]
        if self.server.drop_after is not None and start + len(body) > self.server.drop_after:
            cut = max(0, self.server.drop_after - start)
            self.server.drop_after = None  # once
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._body(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._body(head=False)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server({"/ckpt.bin": DATA})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PFBENCH_WEIGHTS", "PFBENCH_DATA", "PFBENCH_CHECKPOINTS"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setattr(F, "CHUNK", 64 << 10)  # several range requests per file


def _item(server: Server, sha: str | None = None, path: str = "/ckpt.bin") -> Item:
    return Item("test-ckpt", "test checkpoint", "PFBENCH_CHECKPOINTS", "sub/ckpt.bin", server.base + path, sha)


def test_download_completes_verifies_and_records_the_lock(server: Server, tmp_path: Path) -> None:
    item = _item(server, hashlib.sha256(DATA).hexdigest())
    path, what = fetch_item(item)
    assert path == tmp_path / "pfbench_checkpoints" / "sub" / "ckpt.bin" and path.read_bytes() == DATA
    assert "as published" in what and not path.with_name("ckpt.bin.part").exists()
    lock = json.loads((tmp_path / "pfbench_checkpoints" / LOCK).read_text())["files"]["sub/ckpt.bin"]
    assert (lock["name"], lock["url"], lock["size"], lock["sha256"]) == (item.name, item.url, len(DATA),
                                                                          hashlib.sha256(DATA).hexdigest())
    assert len(server.ranges) >= 4  # read in 64 KiB range requests
    server.ranges.clear()
    assert fetch_item(item)[1] == "already in place, sha256 as published" and server.ranges == []  # not again


def test_interrupted_download_resumes_from_the_partial_bytes(server: Server) -> None:
    item = _item(server, hashlib.sha256(DATA).hexdigest())
    server.drop_after = 150_000  # the connection dies in the third 64 KiB chunk
    with pytest.raises(PfbenchError, match=r"stopped at 131072 of 307200 bytes .*rerun `pfbench fetch test-ckpt` "
                                           "to resume") as err:
        fetch_item(item)
    assert "\n" not in str(err.value)
    part = item.dest.with_name("ckpt.bin.part")
    assert part.read_bytes() == DATA[:131072] and not item.dest.exists()  # nothing at the destination
    server.ranges.clear()
    path, _ = fetch_item(item)
    assert server.ranges[0] == f"bytes=131072-{131072 + (64 << 10) - 1}"  # resumed, not restarted
    assert hashlib.sha256(path.read_bytes()).hexdigest() == item.sha256 and not part.exists()


def test_a_partial_file_left_by_another_run_is_continued(server: Server) -> None:
    item = _item(server)  # no published checksum: recorded in the lock
    item.dest.parent.mkdir(parents=True)
    item.dest.with_name("ckpt.bin.part").write_bytes(DATA[:100_000])
    path, what = fetch_item(item)
    assert server.ranges[0].startswith("bytes=100000-") and path.read_bytes() == DATA
    assert "recorded in weights.lock" in what


def test_wrong_checksum_is_refused_and_nothing_is_left(server: Server) -> None:
    item = _item(server, "0" * 64)
    with pytest.raises(PfbenchError, match=r"gave sha256 .*published 0000000000000000…; refused, nothing written "
                                           r"to .*ckpt\.bin") as err:
        fetch_item(item)
    assert "\n" not in str(err.value)
    assert not item.dest.exists() and not item.dest.with_name("ckpt.bin.part").exists()
    assert not (item.dest.parent.parent / LOCK).exists()


def test_offline_names_the_url_and_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    item = Item("test-ckpt", "t", "PFBENCH_CHECKPOINTS", "ckpt.bin", f"http://127.0.0.1:{port}/ckpt.bin")
    with pytest.raises(PfbenchError) as err:
        fetch_item(item)
    msg = str(err.value)
    assert "\n" not in msg and f"cannot reach http://127.0.0.1:{port}/ckpt.bin" in msg
    assert f"put it at {tmp_path / 'pfbench_checkpoints' / 'ckpt.bin'}" in msg
    assert not (tmp_path / "pfbench_checkpoints").exists()  # nothing created


def test_a_missing_url_is_named(server: Server) -> None:
    with pytest.raises(PfbenchError, match=r"answered HTTP 404"):
        fetch_item(_item(server, path="/gone.bin"))


def test_the_lock_notices_a_changed_file(server: Server) -> None:
    item = _item(server)
    path, _ = fetch_item(item)
    assert check_lock(path) is None
    path.write_bytes(DATA[:-1] + b"x")  # same size, other bytes
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time
    problem = check_lock(path)
    assert problem is not None and "changed since `pfbench fetch test-ckpt` recorded it" in problem
    with pytest.raises(PfbenchError, match="changed since"):  # fetch refuses it too: delete and fetch again
        fetch_item(item)
    path.write_bytes(DATA[:1000])
    assert "1000 bytes" in (check_lock(path) or "")


def test_hugging_face_item_offline_fails_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PfbenchError) as err:
        fetch_item(CATALOGUE["sd-vae-ft-ema"])
    msg = str(err.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE is set" in msg
    folder = tmp_path / "pfbench_weights" / "sd-vae-ft-ema"
    assert f"hf download stabilityai/sd-vae-ft-ema diffusion_pytorch_model.safetensors config.json --local-dir {folder}" in msg
    assert not folder.exists()


def test_catalogue_names_groups_and_providers() -> None:
    assert [i.name for i in items(["imagenet", "pft-b"])] == ["pft-b", "pft-xl", "sd-vae-ft-ema", "inception",
                                                              "adm-ref"]
    assert CATALOGUE["pft-xl"].url == "https://ommer-lab.com/files/pft/pft-xl_step400k_ema.ckpt"
    assert CATALOGUE["inception"].sha256 is not None  # torch-fidelity's file has a known sha256
    with pytest.raises(PfbenchError, match="did you mean 'imagenet'"):
        items(["imagent"])
    assert provider("/x/checkpoints/pft-b_step400k_ema.ckpt") == CATALOGUE["pft-b"]
    assert provider("/x/data/VIRTUAL_imagenet256_labeled.npz") == CATALOGUE["adm-ref"]
    assert provider("/x/checkpoints/sit-b2-400k.pt") is None


def test_fetch_many_with_progress(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CATALOGUE, "test-ckpt", _item(server))
    monkeypatch.setitem(CATALOGUE, "test-ref", dataclasses.replace(_item(server), name="test-ref", home="PFBENCH_DATA",
                                                                   path="ref.bin"))
    done = fetch(["test-ckpt", "test-ref"])
    assert [p.read_bytes() == DATA for _, p, _ in done] == [True, True]
