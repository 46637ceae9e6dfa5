"""The structure of the package: no import cycle, the registry as the one place that knows models,
configuration reading without TensorFlow, and a new model added with a registry entry and a builder."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from mfn4rec_tf import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mfn4rec_tf"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path = PACKAGE) -> dict:
    """`{module: {modules of the package it imports}}`, from every import statement of every module
    (at the top or inside a function), resolved to the package's own modules."""
    modules = {_module_name(path): path for path in package_dir.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from a import b` imports module `a.b` when there is one, else a name of `a`
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                # the longest prefix that is a module of the package (`a.b.func` -> `a.b`)
                parts = target.split(".")
                for end in range(len(parts), 0, -1):
                    candidate = ".".join(parts[:end])
                    if candidate in modules:
                        if candidate != name:
                            edges.add(candidate)
                        break
        graph[name] = edges
    return graph


def cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert "mfn4rec_tf.model" in graph and "mfn4rec_tf.registry" in graph["mfn4rec_tf.model"]
    assert cycles(graph) == [], "import cycles inside mfn4rec_tf/ (each list is one cycle's modules)"


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import a\n")  # a lazy import is still an edge
    (package / "c.py").write_text("import pkg.a\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        graph = import_graph(package)
    finally:
        ROOT = saved
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_registry_imports_nothing_of_the_package():
    assert import_graph()["mfn4rec_tf.registry"] <= {"mfn4rec_tf._checks"}


def test_no_command_tests_a_model_name():
    """Commands ask the registry; a literal model name in a comparison means a special case."""
    names = set(registry.names())
    offenders = []
    for module in ("fit", "evaluate", "training", "tune", "compare", "export", "run_config", "cli"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in names:
                        offenders.append(f"{module}.py:{node.lineno} compares with {side.value!r}")
    assert offenders == []


def test_reading_a_config_does_not_import_tensorflow():
    code = ("import sys; from mfn4rec_tf.run_config import load_config; "
            "c = load_config(None, ['model.variant=sasrec', 'model.dropout=0.2']); "
            "from mfn4rec_tf import cli, registry; "
            "print(c.model.dropout, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["0.2", "False", "False"]


def test_every_entry_builds_and_its_loss_resolves():
    from conftest import make_config

    for name in registry.names():
        spec = registry.get(name)
        config = make_config(name) if spec.modalities != "none" else make_config(name, modalities=())
        if isinstance(spec.modalities, tuple):
            config = make_config(name, modalities=tuple(m for m in make_config("mfn4rec").modalities
                                                       if m.name in spec.modalities))
        features = {m.name: np.zeros((config.vocabulary_size, m.dim), "float32") for m in config.modalities}
        features.update({m.name + "_present": np.ones(config.vocabulary_size, bool)
                         for m in config.modalities if m.presence})
        model = spec.build(config, "last", item_features=features)
        assert {layer.name for layer in model.layers} >= {"padding_mask", "fc_out", "item_logits"}, name
        spec.training_loss(config)


def test_presets_sit_between_the_defaults_and_what_the_user_sets():
    from mfn4rec_tf.run_config import load_config

    assert load_config(None, ["model.variant=pop"]).train.retrain is True  # pop's preset
    assert load_config(None, ["model.variant=pop", "train.retrain=false"]).train.retrain is False  # user wins
    assert load_config(None, ["model.variant=mfn4rec"]).train.retrain is None  # no preset
    # the preset follows the variant finally chosen, wherever it was set
    assert load_config(None, ["model.variant=pop", "model.variant=lstm"]).train.retrain is None


# A new baseline: a registry entry and a builder, nothing else of the package changes.

def build_toy_gru(config, output_mode="sequence", item_features=None):
    """A toy model: a GRU over the item embeddings, then FC_out and the item logits."""
    from mfn4rec_tf.baselines._common import fc_out_model, require_modalities
    from mfn4rec_tf.layers import PaddingMask

    require_modalities(config)
    from mfn4rec_tf.heads import model_inputs

    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs["item_ids"])
    embedded = keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim)(inputs["item_ids"])
    states = keras.layers.GRU(config.id_hidden_units, return_sequences=True)(embedded, mask=mask)
    return fc_out_model(config, inputs, mask, states, output_mode)


@pytest.fixture
def new_model():
    spec = registry.register(registry.ModelSpec(
        "toy-gru", "baseline", f"{__name__}:build_toy_gru", "GRU over item embeddings (a test model)",
        modalities="none", preset={"train": {"learning_rate": 0.005}}))
    yield spec
    registry.unregister(spec.name)


def test_a_new_model_needs_only_a_registry_entry_and_a_builder(new_model, tmp_path, capsys):
    from mfn4rec_tf import evaluate, fit

    out = tmp_path / "run"
    code = fit.main(["--model", "toy-gru", "--epochs", "1", "--protocol", "leave-one-out", "--out", str(out),
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert "variant: toy-gru" in config and "learning_rate: 0.005" in config  # its preset
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["recall@20"] <= 1.0
    capsys.readouterr()
    assert evaluate.main(["--run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recall@20"] == pytest.approx(metrics["test"]["recall@20"])


def test_an_unknown_model_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model 'nope'.*sasrec"):
        registry.get("nope")
    from mfn4rec_tf.run_config import load_config

    with pytest.raises(ValueError, match="model.variant"):
        load_config(None, ["model.variant=nope"])


def test_pop_counts_the_items_of_the_training_examples():
    from mfn4rec_tf.config import ModelConfig
    from mfn4rec_tf.model import build_model
    from mfn4rec_tf.training import training_loss

    config = ModelConfig(num_items=6, variant="pop", modalities=())
    model = build_model(config)
    model.compile(optimizer="adam", loss={"logits": training_loss(config)})
    # sequences [1, 2, 5] and [3, 3, 3, 4] as training examples (inputs s[:-1], targets s[1:], right-padded)
    x = {"item_ids": np.array([[1, 2, 0], [3, 3, 3]], "int32")}
    y = {"logits": np.array([[2, 5, 0], [3, 3, 4]], "int32")}
    model.fit(x, y, sample_weight={"logits": (y["logits"] > 0).astype("float32")}, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("item_logits").counts.numpy(), [0, 1, 1, 3, 1, 1, 0])
