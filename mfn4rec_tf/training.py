"""One training run: select on validation, optionally retrain on train + validation, test once.

The run directory holds everything the run made::

    config.yaml          the resolved configuration (a valid --config for another run)
    state.json           progress, for --resume: phase, epochs done, best epoch, history
    checkpoints/         model + optimizer after the last finished epoch of each phase
    best.keras           the model of the best validation epoch (selection phase)
    model.keras          the final model, the one tested (retrained, or the best one)
    logs/                TensorBoard logs (training loss; validation metrics per epoch)
    history.csv          one row per epoch: phase, epoch, loss, validation metrics
    metrics.json, .csv   {"valid": {...}, "test": {...}} full-ranking metrics
    training_curves.png  loss and validation Recall@20 per epoch

Every file is written to a temporary name and renamed into place, so a run killed at any moment
(even `kill -9`) leaves the last complete state, and `resume=True` continues from it: the batch
order depends only on the seed and the epoch, and the checkpoint carries the optimizer and dropout
generator states, so a resumed run ends where an uninterrupted one would.

Epochs are trained by Keras `fit` on one machine (`train.strategy` `none` or `mirrored`) and by the
custom loop of `mfn4rec_tf/multi_worker.py` across machines (`multi-worker`, where Keras 3's `fit`
fails); both go through the same phases below, so a multi-worker run writes the same files (from
its chief only). One machine keeps `fit` because it does what a custom loop would have to redo
there: the models that train by their own step (`pop`'s counting, the sampled softmax of
`mfn4rec_tf/sampled.py`), progress bars and TensorBoard callbacks, and the exact resume that the
tests pin; the custom loop covers what multi-worker training needs and no more.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mfn4rec_tf import metrics as ranking_metrics
from mfn4rec_tf import registry
from mfn4rec_tf._atomic import copy_file, save_model, write_csv, write_json, write_text
from mfn4rec_tf.config import PRESENCE_SUFFIX
from mfn4rec_tf.data import RankingInput, TrainingInput
from mfn4rec_tf.dataset import load_dataset
from mfn4rec_tf.demo import demo_dataset
from mfn4rec_tf.layers import set_known_items
from mfn4rec_tf.model import build_model, load_model, with_output_mode
from mfn4rec_tf.multi_worker import MultiWorker as _MultiWorker
from mfn4rec_tf.run_config import RunConfig

log = logging.getLogger(__name__)
SELECTION_METRIC = "recall@20"


class RunError(ValueError):
    """A run cannot start or continue as asked (the message says why and what to do)."""


def open_data(config: RunConfig):
    """The run's dataset: the directory in `config.data.path`, or the embedded demo."""
    if config.data.path is None:
        return demo_dataset(seed=config.data.demo_seed)
    return load_dataset(config.data.path)


def modality_names(config: RunConfig, dataset):
    """The modalities the run's model reads (`RunConfig.modality_names`)."""
    return config.modality_names(dataset)


def evaluate_split(model, config: RunConfig, dataset, split, names, progress=True) -> dict:
    """Full-ranking metrics of a "last"-mode model on a split's histories and targets.

    For a split with cold items (the `cold-items` protocol) the metrics are also reported for the
    targets that are cold items (keys `cold/...`) and those that are not (`warm/...`)."""
    data = RankingInput(dataset, split.histories, split.targets, modalities=names,
                        batch_size=config.train.eval_batch_size, max_length=config.data.max_length)
    steps = -(-len(split.histories) // config.train.eval_batch_size)
    groups = None
    if split.cold_items is not None:
        cold = np.zeros(dataset.num_items + 1, bool)
        cold[split.cold_items] = True
        groups = {"cold": cold, "warm": ~cold}
    return ranking_metrics.evaluate(model, data.batches(), exclude_history=config.train.exclude_history,
                                    progress=progress, steps=steps, memory_mb=config.train.eval_memory_mb,
                                    target_groups=groups)


def run_training(config: RunConfig, run_dir, resume: bool = False, progress: bool = True) -> dict | None:
    """Trains and evaluates `config` into `run_dir`; returns `{"valid": {...}, "test": {...}}`.

    With `train.strategy: multi-worker` every worker of the cluster in `TF_CONFIG` calls this with
    the same settings; the chief writes `run_dir` and returns the metrics, the other workers write
    nothing and return None once training is over (`mfn4rec_tf/multi_worker.py`).
    """
    run_dir = Path(run_dir)
    # Progress bars on a terminal; redirected output (logs, CI) gets the one-line-per-epoch log only.
    progress = progress and sys.stdout.isatty()
    trainer = _trainer(config)  # first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything
    state = None
    try:
        # Everything that can be wrong with the data or the settings fails here, before --out is touched.
        dataset = open_data(config)
        names = modality_names(config, dataset)
        config.model_config(dataset)
        protocol = config.data.protocol
        valid = config.split(dataset, "validation")
        test = config.split(dataset, "test")
        log.info("Data %s\n  %s\n  %s", dataset, valid.summary(), test.summary())
        if not len(valid.user_ids) or not len(test.user_ids):
            raise RunError(f"The {protocol} protocol leaves no user to evaluate on {dataset.name} "
                           f"(validation {len(valid.user_ids)}, test {len(test.user_ids)}).")
        state = _start(config, run_dir, resume) if trainer.writes else None
        error = None
    except (ValueError, KeyError, FileNotFoundError) as caught:
        if not isinstance(trainer, _MultiWorker):
            raise
        error, dataset = caught, None
    if isinstance(trainer, _MultiWorker):  # every worker learns whether all could start, and the chief's state
        state = trainer.start(error, _settings_text(config, dataset), state)
    _seed(config.train.seed)

    if state["phase"] == "select":
        _select(config, run_dir, state, dataset, names, valid, trainer, progress)
    if state["phase"] == "final" and trainer.writes:  # no retraining: the best validation model is the tested one
        copy_file(run_dir / "best.keras", run_dir / "model.keras")
        state["phase"] = "test"
        write_json(run_dir / "state.json", state)
    if state["phase"] == "retrain":
        _retrain(config, run_dir, state, dataset, names, test, trainer, progress)
    if not trainer.writes:  # a worker's part ends with training; the chief tests and writes the results
        log.info("Training done; waiting for the chief to test the model and write the run.")
        trainer.done()
        return None
    with trainer.scope():
        final = load_model(run_dir / "model.keras")
    test_metrics = evaluate_split(with_output_mode(final, "last"), config, dataset, test, names, progress)
    state["phase"] = "done"
    result = _finish(run_dir, state, state["best_valid"], test_metrics)
    trainer.done()
    return result


def _select(config, run_dir, state, dataset, names, split, trainer, progress):
    """Selection phase: epochs on the validation-mode training data, early stopping on Recall@20."""
    model = _model_for(config, run_dir, state, dataset, trainer, split.train_sequences)
    for result in train_and_select(model, config, dataset, split, names, first_epoch=state["epoch"],
                                   best_epoch=state["best_epoch"], best_scores=state["best_valid"],
                                   log_dir=run_dir / "logs", progress=progress, trainer=trainer):
        if result.improved:
            if trainer.writes:
                save_model(model, run_dir / "best.keras")
            state.update(best_epoch=result.epoch, best_valid=result.scores)
        state["history"].append({"phase": "select", "epoch": result.epoch, "loss": result.loss,
                                 **(result.scores or {})})
        state["epoch"] = result.epoch
        if result.stop:
            state.update(phase="retrain" if config.retrain else "final", epoch=0)
        if trainer.writes:
            _checkpoint(model, run_dir, state, "select")
        if result.stop and trainer.writes:
            log.info("Selected epoch %d (valid %s %.4f).", state["best_epoch"], SELECTION_METRIC,
                     state["best_valid"][SELECTION_METRIC])


@dataclass
class EpochResult:
    """What `train_and_select` yields after each epoch.

    Attributes:
        epoch: the number of the epoch just finished (1-based: the first epoch is 1).
        loss: its mean training loss.
        scores: the full-ranking metrics of the split after it (`evaluate_split`); None on a worker
            of a multi-worker run other than the chief (only the chief ranks).
        improved: whether it has the best validation Recall@20 so far (the first epoch always has).
        best_epoch, best_scores: the best epoch so far and its scores (this one when `improved`).
        stop: whether training stops after it: `train.patience` epochs without a better Recall@20,
            or the last epoch.
    """

    epoch: int
    loss: float
    scores: dict
    improved: bool
    best_epoch: int
    best_scores: dict
    stop: bool


def train_and_select(model, config: RunConfig, dataset, split, names, *, first_epoch=0, last_epoch=None,
                     best_epoch=None, best_scores=None, log_dir=None, progress=False, trainer=None):
    """Trains `model` epoch by epoch and ranks the split after each, with early stopping on Recall@20.

    The selection loop of `fit`, shared with `tune` so that a trial's objective is the same number
    fit selects on. Each epoch trains the compiled `model` (from `new_model`, either output mode) on
    `split.train_sequences` with `config.train`'s batch size, targets and seed (the batch order
    depends only on the seed and the epoch number), then ranks every item for the split's users
    (`evaluate_split`, the full-ranking metrics). Training stops after `config.train.patience`
    epochs without a better validation Recall@20 than `best_scores`, or after epoch `last_epoch`
    (at most the model's `max_epochs` in `mfn4rec_tf.registry`, when it has one).

    Args:
        model, config, dataset, split, names: the compiled model, the run's configuration, the
            dataset, the split to train on and rank (validation mode), the modalities fed.
        first_epoch: epochs already done (0 = start; `k` continues after epoch `k`).
        last_epoch: the last epoch to train. Default `config.train.epochs`.
        best_epoch, best_scores: the best epoch so far and its scores, when continuing.
        log_dir: TensorBoard logs go to `log_dir/select` (training) and `log_dir/validation`;
            None writes none.
        progress: a progress bar per epoch.
        trainer: what trains an epoch: Keras `fit` (default), or a `mfn4rec_tf.multi_worker.MultiWorker`
            whose chief alone ranks the split and tells the other workers whether the epoch improved.

    Yields:
        An `EpochResult` after each epoch. The caller acts on it (saves the best model, checkpoints)
        before the next epoch starts; the last result has `stop=True`.
    """
    trainer = trainer or KerasFit()
    last_epoch = config.train.epochs if last_epoch is None else last_epoch
    most = registry.get(config.model.variant).max_epochs
    if most is not None:  # more epochs cannot change the model (`pop`: counting once is its training)
        last_epoch = min(last_epoch, most)
    ranker = with_output_mode(model, "last")
    data = TrainingInput(dataset, split.train_sequences, modalities=names, batch_size=config.train.batch_size,
                         max_length=config.data.max_length, targets=config.train.targets, seed=config.train.seed,
                         epoch=first_epoch)
    log_dir = None if log_dir is None else Path(log_dir)
    writes = trainer.writes and log_dir is not None
    writer = tf.summary.create_file_writer(str(log_dir / "validation")) if writes else None
    for epoch in range(first_epoch, last_epoch):
        started = time.perf_counter()
        loss = trainer.fit_epoch(model, data, epoch, None if log_dir is None else log_dir / "select", progress,
                                 f"epoch {epoch + 1}/{last_epoch}")
        scores, improved = None, False
        if trainer.writes:
            scores = evaluate_split(ranker, config, dataset, split, names, progress=False)
            if writer is not None:
                with writer.as_default():
                    for key, value in scores.items():
                        tf.summary.scalar(f"validation/{key}", value, step=epoch + 1)
            improved = best_scores is None or scores[SELECTION_METRIC] > best_scores[SELECTION_METRIC]
        (improved,) = trainer.agree(improved)  # the chief's decision on every worker
        improved = bool(improved)
        if improved:
            best_epoch, best_scores = epoch + 1, scores
        if trainer.writes:
            log.info("epoch %d/%d  loss %.4f  valid %s %.4f  (best %.4f at epoch %d)  %.1fs", epoch + 1,
                     last_epoch, loss, SELECTION_METRIC, scores[SELECTION_METRIC],
                     best_scores[SELECTION_METRIC], best_epoch, time.perf_counter() - started)
        else:
            log.info("epoch %d/%d  loss %.4f  (best epoch %d)  %.1fs", epoch + 1, last_epoch, loss, best_epoch,
                     time.perf_counter() - started)
        stop = epoch + 1 - best_epoch >= config.train.patience or epoch + 1 == last_epoch
        yield EpochResult(epoch + 1, loss, scores, improved, best_epoch, best_scores, stop)
        if stop:
            return


def _retrain(config, run_dir, state, dataset, names, split, trainer, progress):
    """The paper's step: a fresh model on train + validation for the selected number of epochs."""
    epochs = state["best_epoch"]
    if state["epoch"] == 0:
        _seed(config.train.seed)  # the same initial weights as the selection phase
        log.info("Retraining on train + validation for %d epoch(s).", epochs)
    model = _model_for(config, run_dir, state, dataset, trainer, split.train_sequences)
    data = TrainingInput(dataset, split.train_sequences, modalities=names, batch_size=config.train.batch_size,
                         max_length=config.data.max_length, targets=config.train.targets, seed=config.train.seed,
                         epoch=state["epoch"])
    for epoch in range(state["epoch"], epochs):
        loss = trainer.fit_epoch(model, data, epoch, run_dir / "logs" / "retrain", progress,
                                 f"retrain epoch {epoch + 1}/{epochs}")
        state["history"].append({"phase": "retrain", "epoch": epoch + 1, "loss": loss})
        state["epoch"] = epoch + 1
        log.info("retrain epoch %d/%d  loss %.4f", epoch + 1, epochs, loss)
        if epoch + 1 == epochs:
            if trainer.writes:
                save_model(model, run_dir / "model.keras")
            state["phase"] = "test"
        if trainer.writes:
            _checkpoint(model, run_dir, state, "retrain")


def _model_for(config, run_dir, state, dataset, trainer, sequences):
    """A fresh compiled model, or the phase's checkpoint when the phase is under way (with its
    sampler attached again for `train.loss: sampled`). In a multi-worker run the chief's model (the
    checkpoint, or fresh from the seed) is then loaded into every worker's replica model."""
    with trainer.scope():
        if state["epoch"] > 0 and trainer.writes:
            checkpoint = run_dir / state["checkpoint"]
            log.info("Resuming %s phase after epoch %d from %s", state["phase"], state["epoch"], checkpoint)
            model = with_training_loss(load_model(checkpoint), config, sequences)
            _set_seed_states(model, state["seed_states"])
        else:  # (another worker than the chief resuming: replaced by the chief's model below)
            model = new_model(config, dataset, sequences)
    trainer.prepare(model, lambda: new_model(config, dataset, sequences))
    return model


def new_model(config: RunConfig, dataset, sequences=None) -> keras.Model:
    """A fresh model of `config` on `dataset`, compiled as runs train it.

    `build_model(config.model_config(dataset))` in the output mode of `train.targets` ("sequence"
    for `all`, "last" for `last`), with the feature tables of the modalities it reads (for VBPR),
    Adam with `train.learning_rate`, and the model's loss on the logits (`training_loss`: softmax
    cross-entropy, or BPR's for bpr / vbpr). With `train.loss: sampled` the model trains with the
    sampled softmax (`with_training_loss`), whose sampler reads the targets of `sequences` (the
    training sequences; required then). Weights are drawn from Keras' global seed: seed first for
    reproducible weights. With `model.item_representation` `features` or `id+features` the items
    of `sequences` are the model's known items (`set_known_items`); the others read and score as
    new items.
    """
    output_mode = "sequence" if config.train.targets == "all" else "last"
    model_config = config.model_config(dataset)
    item_features = {}
    for modality in model_config.modalities:
        item_features[modality.name] = dataset.features(modality.name)
        if modality.presence:
            item_features[modality.name + PRESENCE_SUFFIX] = dataset.presence(modality.name)
    model = build_model(model_config, output_mode=output_mode, item_features=item_features)
    if model_config.item_representation != "id":
        set_known_items(model, known_items(sequences, dataset.num_items))
    model = with_training_loss(model, config, sequences)
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        loss={"logits": training_loss(model_config)},
    )
    return model


def known_items(sequences, num_items) -> np.ndarray:
    """`(num_items + 1,)` booleans: the items of the training `sequences` (whose IDs training sees).

    Raises:
        RunError: `sequences` is None (a features model must know which IDs it trains).
    """
    if sequences is None:
        raise RunError("`model.item_representation` features / id+features needs the training sequences (to "
                       "know which items' IDs are trained).")
    known = np.zeros(num_items + 1, bool)
    for sequence in sequences:
        known[np.asarray(sequence, np.int64)] = True
    return known


def with_training_loss(model, config: RunConfig, sequences):
    """`model` ready for `train.loss`: itself for `full` (or a model that trains by no loss), else a
    `SampledSoftmaxModel` over the same layers with a `CandidateSampler` of `train.sampler` and
    `train.num_negatives` (seeded by `train.seed`), its probabilities from the targets of
    `sequences` (each sequence's items after the first)."""
    if config.train.loss != "sampled" or registry.get(config.model.variant).sampled_loss is not True:
        return model
    if sequences is None:
        raise RunError("`train.loss: sampled` needs the training sequences (for the sampler's probabilities).")
    from mfn4rec_tf.sampled import CandidateSampler, attach_sampler

    num_items = model.get_layer("item_logits").vocabulary_size - 1
    targets = [np.asarray(s[1:], np.int64) for s in sequences if len(s) > 1]
    counts = np.bincount(np.concatenate(targets) if targets else np.zeros(0, np.int64), minlength=num_items + 1)
    sampler = CandidateSampler(config.train.sampler, counts, config.train.num_negatives,
                               keras.random.SeedGenerator(config.train.seed + 7))
    return attach_sampler(model, sampler)


def training_loss(model_config) -> keras.losses.Loss:
    """The loss a model trains with: its own (its registry entry's `loss`, e.g. BPR's pairwise loss),
    or softmax cross-entropy over every item."""
    own = registry.get(model_config.variant).training_loss(model_config)
    return own if own is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _EpochProgress(keras.callbacks.Callback):
    """A progress bar per epoch titled with the run's own epoch count (Keras' would say "Epoch 3/3"
    for the third of thirty epochs, since each call of `fit` runs one)."""

    def __init__(self, title, steps):
        super().__init__()
        self.title, self.steps = title, steps

    def on_train_begin(self, logs=None):
        print(self.title, flush=True)
        self.bar = keras.utils.Progbar(self.steps, unit_name="step")

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch + 1, values=[("loss", float(logs["loss"]))] if logs and "loss" in logs else None)


class KerasFit:
    """Epochs by Keras `fit` on one machine, under `strategy` (None: the default strategy)."""

    writes = True

    def __init__(self, strategy=None):
        self.strategy = strategy or tf.distribute.get_strategy()

    def scope(self):
        return self.strategy.scope()

    def prepare(self, model, build):
        """Nothing to do: `fit` trains the model itself."""

    def agree(self, *values):
        return values

    def done(self):
        """Nothing to wait for."""

    def fit_epoch(self, model, data, epoch, log_dir, progress, title) -> float:
        callbacks = [] if log_dir is None else [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]
        if progress:
            callbacks.append(_EpochProgress(title, data.steps_per_epoch))
        history = model.fit(
            data.tf_dataset(),
            initial_epoch=epoch,
            epochs=epoch + 1,
            shuffle=False,  # the input shuffles, by seed and epoch
            verbose=0,
            callbacks=callbacks,
        )
        return float(history.history["loss"][-1])


def _checkpoint(model, run_dir, state, phase):
    """Model + optimizer, then the state that points at it (each file replaced atomically)."""
    name = f"checkpoints/{phase}-epoch{state['epoch']:03d}.keras"
    previous = state.get("checkpoint")
    if state["phase"] == phase:
        save_model(model, run_dir / name)
        state["checkpoint"] = name
        state["seed_states"] = [v.numpy().tolist() for v in _seed_state_variables(model)]
    write_json(run_dir / "state.json", state)
    if previous and previous != state.get("checkpoint"):
        (run_dir / previous).unlink(missing_ok=True)
    if state["phase"] != phase and state.get("checkpoint"):
        (run_dir / state.pop("checkpoint")).unlink(missing_ok=True)
        write_json(run_dir / "state.json", state)


def _start(config, run_dir, resume):
    state_file = run_dir / "state.json"
    config_text = config.to_yaml()
    if resume:
        if not state_file.is_file():
            raise RunError(f"Nothing to resume in {run_dir}: no state.json (start the run without --resume).")
        saved = (run_dir / "config.yaml").read_text()
        if saved != config_text:
            raise RunError(f"{run_dir}/config.yaml differs from this run's configuration; resume with the same "
                           "--config and flags (or start a new run in another --out).")
        return json.loads(state_file.read_text())
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out.")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", config_text)
    state = {"phase": "select", "epoch": 0, "best_epoch": None, "best_valid": None, "history": []}
    write_json(state_file, state)
    return state


def _finish(run_dir, state, valid, test):
    from mfn4rec_tf.plots import plot_training_curves

    result = {"valid": valid, "test": test}
    write_json(run_dir / "metrics.json", result)
    keys = sorted(set(valid) | set(test))
    rows = [["split", *keys]] + [[split, *[scores.get(k, "") for k in keys]] for split, scores in result.items()]
    write_csv(run_dir / "metrics.csv", rows)
    if state["history"]:
        columns = list(dict.fromkeys(k for row in state["history"] for k in row))
        write_csv(run_dir / "history.csv", [columns] + [[row.get(c, "") for c in columns] for row in state["history"]])
        plot_training_curves(state["history"], run_dir / "training_curves.png", metric=SELECTION_METRIC,
                             best_epoch=state.get("best_epoch"))
    write_json(run_dir / "state.json", state)
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # a finished run keeps no checkpoint
    return result


def _seed_state_variables(model):
    """The dropout generators' states, and the sampled loss's sampler's. `.keras` files do not keep
    them (Keras 3.15), so checkpoints carry them in state.json; without them a resumed run would draw
    other dropout masks and other negatives."""
    from mfn4rec_tf.sampled import sampler_seed_states

    own = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    return own + sampler_seed_states(model)


def _set_seed_states(model, states):
    variables = _seed_state_variables(model)
    if len(variables) != len(states):
        raise RunError(f"The checkpoint has {len(variables)} dropout generators but state.json {len(states)}.")
    for variable, value in zip(variables, states):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _trainer(config):
    """What trains the epochs of `config.train.strategy`: Keras `fit` (`none`, `mirrored`) or the
    multi-worker loop (reads `TF_CONFIG` first, so a bad one fails before anything else)."""
    if config.train.strategy == "multi-worker":
        from mfn4rec_tf.cluster import read_cluster

        cluster = read_cluster()
        return _MultiWorker(cluster)
    if config.train.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log.info("MirroredStrategy over %d replica(s)", strategy.num_replicas_in_sync)
        return KerasFit(strategy)
    return KerasFit()


def _settings_text(config, dataset) -> str:
    """What the workers of a multi-worker run must agree on: the settings (the data path aside, which may
    differ between machines) and the dataset's counts."""
    settings = config.to_dict()
    settings["data"] = {**settings["data"], "path": None}
    counts = None if dataset is None else [dataset.num_items, len(dataset.interactions), dataset.name]
    return json.dumps([settings, counts], sort_keys=True, default=str)


def _seed(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
