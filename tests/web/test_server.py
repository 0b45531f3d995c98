"""``df2am serve`` API: search by upload, errors, the run browser, path safety (TestClient)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import faiss  # noqa: F401  (deploy extra: a missing one fails, never skips)
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from df2am.errors import ConfigError, DatasetError
from df2am.web.app import create_app, path_labels

from . import build_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_env(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def client(env) -> TestClient:
    app = create_app(index=env["index"], checkpoint=env["ckpt"], run=env["run"],
                     root=env["root"], threshold=0.01, max_upload_bytes=200_000)
    return TestClient(app)


def _upload(client: TestClient, data: bytes, modality: str = "rgb", **form):
    return client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")},
                       data={"modality": modality, **{k: str(v) for k, v in form.items()}})


def test_twin_is_first_and_thumbnail_served(client, env):
    r = _upload(client, env["twin"].read_bytes(), limit=5)
    assert r.status_code == 200, r.text
    res = r.json()
    first = res["results"][0]
    assert first["path"] == env["twin_path"].as_posix() and first["rank"] == 1
    assert first["distance"] < 1e-4 and res["in_gallery"] is True
    assert first["identity"] == 5 and first["camera"] == "1"  # cam1/0005/0002.jpg
    assert len(res["results"]) == 5 and res["total"] == 12
    dists = [m["distance"] for m in res["results"]]
    assert dists == sorted(dists)
    img = client.get(first["url"])
    assert img.status_code == 200 and img.content == env["twin"].read_bytes()
    # Paging: offset 2 is ranks 3.. of the same ranking.
    page = _upload(client, env["twin"].read_bytes(), offset=2, limit=2).json()
    assert [m["rank"] for m in page["results"]] == [3, 4]
    assert [m["path"] for m in page["results"]] == [m["path"] for m in res["results"][2:4]]


def test_bad_uploads_are_400_with_a_message(client, env):
    cases = {
        "q.jpg: not an image file": _upload(client, b"this is not an image"),
        "too large": _upload(client, b"\xff" * 200_001),
        "modality must be": _upload(client, env["twin"].read_bytes(), modality="thermal"),
        "q.jpg: empty (0 bytes)": _upload(client, b""),
    }
    for message, r in cases.items():
        assert r.status_code == 400 and message in r.json()["detail"], (message, r.text)
        assert "BytesIO" not in r.text  # the upload's name, never the buffer's repr
    assert _upload(client, env["twin"].read_bytes(), limit=0).status_code == 400
    # A PNG of another size and mode is fine (resized like the gallery).
    buf = io.BytesIO()
    Image.fromarray(np.zeros((50, 30), np.uint8)).save(buf, format="PNG")
    assert _upload(client, buf.getvalue(), modality="ir").status_code == 200


def test_gallery_by_row_only(client):
    assert client.get("/gallery/12").status_code == 404
    assert client.get("/gallery/-1").status_code == 404
    assert client.get("/gallery/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_not_configured_is_404(env):
    only_run = TestClient(create_app(run=env["run"], root=env["root"], checkpoint=env["ckpt"]))
    r = _upload(only_run, env["twin"].read_bytes())
    assert r.status_code == 404 and "no index" in r.json()["detail"]
    assert only_run.get("/gallery/0").status_code == 404
    only_search = TestClient(create_app(index=env["index"], checkpoint=env["ckpt"]))
    for url in ("/api/run", "/api/run/queries", "/dataset/cam1/0004/0001.jpg"):
        r = only_search.get(url)
        assert r.status_code == 404 and "no evaluation run" in r.json()["detail"], url
    assert only_search.get("/api/info").json() == {
        **only_search.get("/api/info").json(), "search": True, "run": False}
    with pytest.raises(DatasetError, match="no results.json"):
        create_app(run=env["root"] / "nope", root=env["root"])
    with pytest.raises(ConfigError, match="--index"):
        create_app()
    # An index alone: the uploads are embedded by the checkpoint its features were
    # extracted with (recorded in the index, verified by fingerprint) — issue 21.
    remembered = TestClient(create_app(index=env["index"]))
    assert remembered.get("/api/info").json()["query_model"] == str(env["ckpt"].resolve())
    got = _upload(remembered, env["twin"].read_bytes()).json()["results"]
    want = _upload(only_search, env["twin"].read_bytes()).json()["results"]
    assert got == want


def test_path_traversal_refused(client, env):
    ok = client.get("/dataset/cam1/0004/0001.jpg")
    assert ok.status_code == 200
    assert ok.content == (env["root"] / "cam1/0004/0001.jpg").read_bytes()
    secret = env["outside"] / "secret.jpg"
    bad = [
        "/dataset/../outside/secret.jpg",       # normalised by the client: not our route
        "/dataset/%2e%2e/outside/secret.jpg",
        "/dataset/cam1/%2e%2e/%2e%2e/outside/secret.jpg",
        "/dataset/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
        "/dataset/" + str(secret),
        "/dataset/cam1/escape.jpg",             # a symlink inside the root pointing outside
        "/dataset/exp/test_id.txt",             # not an image
        "/dataset/cam1/nope.jpg",
        "/dataset/cam1%5C..%5C..%5Coutside%5Csecret.jpg",
    ]
    for url in bad:
        r = client.get(url)
        assert r.status_code in (400, 404), (url, r.status_code)
        assert r.content != secret.read_bytes(), url


def test_run_summary_and_cmc(client, env):
    r = client.get("/api/run").json()
    results = json.loads((env["run"] / "results.json").read_text())
    metrics = {m["key"]: m["mean"] for m in r["metrics"]}
    assert metrics["rank1"] == results["rank1"] and metrics["mAP"] == results["mAP"]
    assert r["cmc"]["mean"] == results["cmc"]["mean"] and r["ranked"] and r["trial"] == 0
    assert r["rank1_recomputed"] == pytest.approx(results["per_trial"][0]["rank1"])


def test_run_queries_equal_an_independent_computation(client, env):
    import torch

    from df2am.data.datasets.sysu import sysu_gallery, sysu_query
    from df2am.deploy.api import extract_features, load_model

    root = env["root"]
    query, gallery = sysu_query(root, "all"), sysu_gallery(root, "all", 0)
    model, _ = load_model(env["ckpt"])
    with torch.no_grad():
        q = extract_features(model, [root / r.path for r in query], "ir")
        g = extract_features(model, [root / r.path for r in gallery], "rgb")
    dist = (1 - q @ g.T).numpy()
    want = {}
    for i, rec in enumerate(query):
        cols = [j for j, gr in enumerate(gallery) if not (rec.cam == 3 and gr.cam == 2)]
        best = cols[int(np.argmin(dist[i, cols]))]
        want[rec.path] = gallery[best].pid == rec.pid
    r = client.get("/api/run/queries", params={"limit": 200, "k": 3}).json()
    assert r["total"] == len(query) and len(r["queries"]) == len(query)
    got = {x["path"]: x["correct"] for x in r["queries"]}
    assert got == want
    assert all(len(x["ranked"]) == 3 for x in r["queries"])
    assert all(x["ranked"][0]["correct"] == x["correct"] for x in r["queries"])
    # One distance convention with search: cosine distance 1 - cos in [0, 2] (was -cos).
    row = {rec.path: i for i, rec in enumerate(query)}
    col = {rec.path: j for j, rec in enumerate(gallery)}
    for x in r["queries"]:
        for g in x["ranked"]:
            assert 0 <= g["distance"] <= 2
            assert g["distance"] == pytest.approx(dist[row[x["path"]], col[g["path"]]], abs=1e-5)
    assert client.get("/api/run").json()["distance"].startswith("cosine distance 1 - cos")
    # Filters.
    failed = client.get("/api/run/queries", params={"failed": 1, "limit": 200}).json()
    assert {x["path"] for x in failed["queries"]} == {p for p, ok in want.items() if not ok}
    cam6 = client.get("/api/run/queries", params={"cam": 6, "limit": 200}).json()
    assert cam6["total"] > 0 and all(x["cam"] == 6 for x in cam6["queries"])
    page = client.get("/api/run/queries", params={"offset": 2, "limit": 3}).json()
    assert [x["path"] for x in page["queries"]] == [x["path"] for x in r["queries"][2:5]]
    assert client.get("/api/run/queries", params={"limit": 0}).status_code == 422


def test_page_and_static_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for f in ("app.js", "style.css"):
        r = client.get(f"/static/{f}")
        assert r.status_code == 200 and "https://" not in r.text


def test_cli_serve_port_zero_binds_loopback():
    from df2am.cli.serve_commands import bind

    sock = bind("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
    finally:
        sock.close()
    with pytest.raises(ConfigError, match="--port"):
        bind("127.0.0.1", 70000)


@pytest.mark.parametrize(("path", "identity", "camera"), [
    ("/data/SYSU-MM01/cam3/0012/0001.jpg", 12, "3"),          # SYSU-MM01
    ("/data/LLCM/test_nir/cam4/0123/x.jpg", 123, "4"),          # LLCM
    ("/data/RegDB/Thermal/57/female_t_0001.bmp", 57, "thermal"),  # RegDB
    ("gallery/0001_c03_s1_000151_01.jpg", None, "3"),           # Market-style name
    ("photos/alice/img1.jpg", None, None),                      # nothing to read
    ("cam_2/0007/a.png", 7, "2"),
])
def test_path_labels(path, identity, camera):
    assert path_labels(path) == {"identity": identity, "camera": camera}
