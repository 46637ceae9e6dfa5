"""Slow: the whole path on real data — the generic pipeline on Amazon 2014 Beauty (IDs + titles), then
`fit` under leave-one-out for one epoch; MFN4Rec must beat the popularity baseline."""

import json
from pathlib import Path

import numpy as np
import pytest

from mfn4rec_tf import fit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2014-beauty"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def beauty(tmp_path_factory):
    if not (DATA / "interactions.csv").is_file():
        pytest.skip(f"real data not found at {DATA}")
    from pipelines import generic
    from pipelines.text_features import tokenize

    folder = tmp_path_factory.mktemp("beauty")
    titles = (DATA / "items.csv").read_text().splitlines()[1:]
    counts = {}
    for tokens in tokenize([line.partition(",")[2] for line in titles]):
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:3000]
    rng = np.random.default_rng(0)
    glove = folder / "vectors.txt"  # random word vectors: the text modality then encodes which words a title has
    glove.write_text("".join(f"{w} " + " ".join(f"{v:.5f}" for v in rng.normal(size=16)) + "\n" for w in words))
    out = folder / "dataset"
    generic.main(["--interactions", str(DATA / "interactions.csv"), "--items", str(DATA / "items.csv"),
                  "--glove", str(glove), "--dim", "16", "--out", str(out)])
    return out


def test_mfn4rec_beats_popularity_on_beauty_leave_one_out(beauty, tmp_path):
    common = ["--data", str(beauty), "--protocol", "leave-one-out", "--quiet"]
    assert fit.main(common + ["--model", "pop", "--out", str(tmp_path / "pop")]) == 0
    assert fit.main(common + ["--epochs", "1", "--out", str(tmp_path / "mfn4rec")]) == 0
    pop = json.loads((tmp_path / "pop" / "metrics.json").read_text())
    mfn = json.loads((tmp_path / "mfn4rec" / "metrics.json").read_text())
    assert pop["valid"]["users"] == mfn["valid"]["users"] == 22332
    print(f"\nBeauty leave-one-out valid recall@20: mfn4rec {mfn['valid']['recall@20']:.4f}, "
          f"pop {pop['valid']['recall@20']:.4f}")
    assert mfn["valid"]["recall@20"] > pop["valid"]["recall@20"]
