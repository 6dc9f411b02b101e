"""A 100,000-class OLS run from the command line: top-k soft labels, label noise kept as pairs, a run folder of
bounded size, soft-labels."""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter

import numpy as np
import pytest

from olsmooth import OnlineLabelSmoothing
from olsmooth.cli import main
from olsmooth.data.sources.synthetic import make_split


@pytest.fixture(scope="module")
def run_100k(tmp_path_factory):
    """A 100,000-class run with label noise; the largest numpy allocation it made is kept in `peak.txt`."""
    out = tmp_path_factory.mktemp("runs") / "k100k"
    tracemalloc.start()
    try:
        assert main(["train", "--dataset", "synthetic-100k", "--method", "ols", "--loss-opt", "top_k=32",
                     "--noise", "symmetric:0.2", "--train-subset", "512", "--epochs", "1", "--threads", "1",
                     "--out", str(out)]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (out.parent / "peak.txt").write_text(str(peak))
    return out


def test_a_hundred_thousand_class_run_saves_top_k_rows_not_a_dense_matrix(run_100k):
    files = sorted(p.name for p in (run_100k / "soft_labels").iterdir())
    assert files == ["epoch-001.npz", "epoch-001.png"]
    saved = np.load(run_100k / "soft_labels" / "epoch-001.npz")
    assert saved["index"].shape == saved["value"].shape == (100_000, 32) and saved["residual"].shape == (100_000,)
    np.testing.assert_allclose(saved["value"].sum(1) + saved["residual"], 1.0, atol=1e-4)
    # the whole run folder stays linear in K: model, optimizer and OLS state, no K x K anywhere
    total = sum(p.stat().st_size for p in run_100k.rglob("*") if p.is_file())
    assert total < 400 * 10**6
    rows = [json.loads(line) for line in (run_100k / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and 0 <= rows[-1]["top5"] <= 100


def test_label_noise_at_a_hundred_thousand_classes_keeps_its_transition_as_pairs(run_100k):
    clean, noisy = np.load(run_100k / "clean_labels.npy"), np.load(run_100k / "noisy_labels.npy")
    record = json.loads((run_100k / "noise.json").read_text())
    assert "transition" not in record and record["rate_realised"] == round(0.2 * 512) / 512
    sparse = record["transition_sparse"]
    pairs, sizes = Counter(zip(clean.tolist(), noisy.tolist())), Counter(clean.tolist())
    expected = sorted((c, k, n / sizes[c]) for (c, k), n in pairs.items())
    assert sparse["classes"] == 100_000
    assert list(zip(sparse["clean"], sparse["noisy"], sparse["fraction"])) == expected
    # nothing of K x K: the largest numpy allocation of the whole run is far below even one byte per pair of classes
    assert int((run_100k.parent / "peak.txt").read_text()) < 10**9 < 100_000**2


def test_loss_correction_at_a_hundred_thousand_classes_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "forward"
    assert main(["train", "--dataset", "synthetic-100k", "--method", "forward", "--noise", "symmetric:0.2",
                 "--train-subset", "512", "--threads", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "100,000 classes is over its limit of 4,096" in err and "\n" not in err and not out.exists()


def test_dense_ols_at_a_hundred_thousand_classes_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "dense"
    assert main(["train", "--dataset", "synthetic-100k", "--method", "ols", "--train-subset", "512",
                 "--threads", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    # 2 x 100,000 x 100,001 float32 = 74.5 GiB, refused before any of it is allocated
    assert "100000 classes needs 74.5 GiB" in err and "top_k" in err and "\n" not in err and not out.exists()
    with pytest.raises(ValueError, match="give top_k"):
        OnlineLabelSmoothing(100_000)


def test_soft_labels_lists_the_most_similar_classes_from_the_sparse_rows(run_100k, capsys, tmp_path):
    assert main(["soft-labels", str(run_100k), "--json", "--top", "3", "--figures", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 100_000 and len(summary["classes"]) == 100_000
    saved = np.load(run_100k / "soft_labels" / "epoch-001.npz")
    for row in summary["classes"][:200]:  # oracle: each row's largest kept entries on other classes
        c = row["class"]
        kept = [(float(v), int(i)) for i, v in zip(saved["index"][c], saved["value"][c]) if i >= 0 and i != c]
        expected = [i for _, i in sorted(kept, key=lambda e: (-e[0], e[1]))[:3]]
        assert [s["class"] for s in row["similar"]] == expected
    assert (tmp_path / "soft-labels-top.png").is_file() and not (tmp_path / "soft-labels-clustered.png").exists()


def test_the_synthetic_test_set_draws_only_classes_seen_in_training():
    _, train_y, _, test_y = make_split(1_000)
    assert set(test_y.tolist()) <= set(train_y.tolist())
