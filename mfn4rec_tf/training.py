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
    test_per_user.npz    each test user's Recall@K and NDCG@K (`PER_USER_FILE`)
    cold_start.csv       `item_representation: id+knn` only: the cold-start head's calibration grid
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

from mfn4rec_tf import calibration, optim, registry
from mfn4rec_tf import metrics as ranking_metrics
from mfn4rec_tf._atomic import copy_file, save_model, write_csv, write_json, write_npz, write_text
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


def evaluate_split(model, config: RunConfig, dataset, split, names, progress=True, per_user=False):
    """Full-ranking metrics of a "last"-mode model on a split's histories and targets; with
    `per_user`, the pair `(metrics, per-user values)` (`RankingMetrics.per_user_result`, in the
    order of `split.user_ids`).

    For a split with cold items (the `cold-items` protocol) the metrics are also reported for the
    targets that are cold items (keys `cold/...`) and those that are not (`warm/...`)."""
    batches, steps, groups = ranking_batches(config, dataset, split, names)
    return ranking_metrics.evaluate(model, batches, exclude_history=config.train.exclude_history,
                                    progress=progress, steps=steps, memory_mb=config.train.eval_memory_mb,
                                    per_user=per_user, target_groups=groups)


def ranking_batches(config: RunConfig, dataset, split, names) -> tuple:
    """`(batches, steps, target_groups)` of a split's rankings: its `(inputs, targets)` batches, their
    number, and under `cold-items` the `cold` / `warm` item flags (None otherwise)."""
    data = RankingInput(dataset, split.histories, split.targets, modalities=names,
                        batch_size=config.train.eval_batch_size, max_length=config.data.max_length)
    steps = -(-len(split.histories) // config.train.eval_batch_size)
    groups = None
    if split.cold_items is not None:
        cold = np.zeros(dataset.num_items + 1, bool)
        cold[split.cold_items] = True
        groups = {"cold": cold, "warm": ~cold}
    return data.batches(), steps, groups


PER_USER_FILE = "test_per_user.npz"
"""Each test user's own metrics in a run directory: `user_id` (the split's users) and one float64
array per `RankingMetrics.per_user_keys()` key (`recall@20`, `ndcg@20`, ...), NaN for a user without
targets. `compare` pairs two models' `recall@20` by user for its significance test."""


def read_per_user(run_dir) -> dict | None:
    """The arrays of a run's `PER_USER_FILE`, or None when the run has none."""
    path = Path(run_dir) / PER_USER_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def training_input(config: RunConfig, dataset, split, names, epoch=0) -> TrainingInput:
    """The training batches of `split` as `config` asks (batch size, `data.max_length`,
    `data.train_windows` and `data.window_stride`, targets, seed), starting at epoch `epoch`."""
    return TrainingInput(dataset, split.train_sequences, modalities=names, batch_size=config.train.batch_size,
                         max_length=config.data.max_length, targets=config.train.targets, seed=config.train.seed,
                         epoch=epoch, windows=config.data.train_windows, stride=config.data.window_stride)


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
        _warn_context_logits(config)
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
    if (config.model.item_representation == "id+knn" and state["phase"] in ("final", "retrain")
            and "cold_start" not in state and trainer.writes):
        _calibrate_cold_start(config, run_dir, state, dataset, names, valid, progress)
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
    test_metrics, per_user = evaluate_split(with_output_mode(final, "last"), config, dataset, test, names, progress,
                                            per_user=True)
    write_npz(run_dir / PER_USER_FILE, user_id=np.asarray([str(u) for u in test.user_ids]), **per_user)
    state["phase"] = "done"
    result = _finish(run_dir, state, state["best_valid"], test_metrics)
    trainer.done()
    return result


def _select(config, run_dir, state, dataset, names, split, trainer, progress):
    """Selection phase: epochs on the validation-mode training data, early stopping on Recall@20."""
    model = _model_for(config, run_dir, state, dataset, trainer, split.train_sequences)
    if config.train.lr_schedule == "plateau":
        state.setdefault("plateau", optim.PlateauState.fresh(config.train))
    for result in train_and_select(model, config, dataset, split, names, first_epoch=state["epoch"],
                                   best_epoch=state["best_epoch"], best_scores=state["best_valid"],
                                   log_dir=run_dir / "logs", progress=progress, trainer=trainer,
                                   steps_done=state.get("steps", 0), seconds_done=state.get("seconds", 0.0),
                                   plateau=state.get("plateau")):
        if result.improved:
            if trainer.writes:
                save_model(model, run_dir / "best.keras")
            # A best epoch cut short by a budget: the retraining cuts its last epoch at the same step.
            state.update(best_epoch=result.epoch, best_valid=result.scores,
                         best_epoch_steps=result.epoch_steps if result.cut_short else None)
        state["history"].append({"phase": "select", "epoch": result.epoch, "loss": result.loss,
                                 "steps": result.total_steps, "seconds": round(result.seconds, 3),
                                 **(result.scores or {}), **({"stopped_by": result.stopped_by} if result.stop else {})})
        state.update(epoch=result.epoch, steps=result.total_steps, seconds=result.seconds)
        if result.stop:
            state.update(phase="retrain" if config.retrain else "final", epoch=0, stopped_by=result.stopped_by)
        if trainer.writes:
            _checkpoint(model, run_dir, state, "select")
        if result.stop and trainer.writes:
            log.info("Selected epoch %d (valid %s %.4f); the selection phase was ended by %s after %d epoch(s), "
                     "%d step(s), %.0fs.", state["best_epoch"], SELECTION_METRIC,
                     state["best_valid"][SELECTION_METRIC], describe_stop(result.stopped_by, config), result.epoch,
                     result.total_steps, result.seconds)


def _calibrate_cold_start(config, run_dir, state, dataset, names, split, progress):
    """An `id+knn` run's cold-start head calibrated on validation (`mfn4rec_tf.calibration`), on the
    best model: best.keras is saved again with it, the grid goes to cold_start.csv, the blend to
    state.json (the retraining gives it to the retrained model), and the calibrated model's validation
    metrics replace the selection's as the run's `valid` metrics."""
    best = load_model(run_dir / "best.keras")
    ranker = with_output_mode(best, "last")
    chosen = calibrate_split(ranker, config, dataset, split, names, progress)
    save_model(best, run_dir / "best.keras")
    calibration.write_table(run_dir, chosen)
    # metrics.json's validation metrics are the calibrated model's; the selection's (head off) stay in the history
    state.update(cold_start=chosen.summary(),
                 best_valid=evaluate_split(ranker, config, dataset, split, names, progress))
    write_json(run_dir / "state.json", state)


def calibrate_split(model, config: RunConfig, dataset, split, names, progress=True, offsets=calibration.OFFSETS,
                    slopes=calibration.SLOPES, warm_tolerance=None) -> calibration.Calibration:
    """`calibration.calibrate` of an `id+knn` model ("last" output mode) on a split of a run: its
    batches, history exclusion and cold / warm groups, as `evaluate_split` ranks it; logs the choice."""
    batches, steps, groups = ranking_batches(config, dataset, split, names)
    chosen = calibration.calibrate(model, batches, exclude_history=config.train.exclude_history, target_groups=groups,
                                   offsets=offsets, slopes=slopes, metric=SELECTION_METRIC,
                                   warm_tolerance=warm_tolerance, steps=steps, progress=progress)
    row, off = chosen.chosen, chosen.rows[0]
    parts = [f"{key} {row[key]:.4f} (off: {off[key]:.4f})" for key in
             (SELECTION_METRIC, f"cold/{SELECTION_METRIC}", f"warm/{SELECTION_METRIC}") if key in row]
    log.info("Cold-start head: %s, chosen by %s; validation %s.", calibration.describe(chosen.offset, chosen.slope),
             chosen.metric, ", ".join(parts))
    return chosen


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
            the last epoch, or a budget (`train.max_steps`, `train.max_minutes`) spent.
        epoch_steps: the training steps of this epoch (fewer than a full epoch's when a budget cut it).
        cut_short: whether a budget ended this epoch before its last batch.
        total_steps: the steps of the phase so far (those of earlier sessions included).
        seconds: the phase's wall time so far (training and rankings, earlier sessions included).
        stopped_by: why training stops (`STOP_REASONS`), or None while it goes on.
    """

    epoch: int
    loss: float
    scores: dict
    improved: bool
    best_epoch: int
    best_scores: dict
    stop: bool
    epoch_steps: int = 0
    cut_short: bool = False
    total_steps: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None


STOP_REASONS = ("patience", "epochs", "max_steps", "max_minutes")
"""What ends a selection phase: no better validation Recall@20 for `train.patience` epochs, the last
epoch (`train.epochs`, or the model's own most), the step budget, the wall-clock budget. A budget
that cut the last epoch short is recorded as what ended the phase; otherwise, when several hold after
the same epoch, the first of this order is."""


def describe_stop(reason, config: RunConfig) -> str:
    """`reason` (one of `STOP_REASONS`) in words, with its setting."""
    train = config.train
    return {"patience": f"patience ({train.patience} epoch(s) without a better validation {SELECTION_METRIC})",
            "epochs": f"the epoch budget ({train.epochs}, or the model's own most)",
            "max_steps": f"the step budget (train.max_steps={train.max_steps})",
            "max_minutes": f"the wall-clock budget (train.max_minutes={train.max_minutes})"}.get(reason, str(reason))


class Budget(keras.callbacks.Callback):
    """Stops Keras `fit` after the batch that spends a step or wall-clock budget.

    Args:
        max_steps: the most steps this `fit` call may take (None: no limit).
        deadline: a `time.perf_counter()` value after which no further step starts (None: none).
    """

    def __init__(self, max_steps=None, deadline=None):
        super().__init__()
        self.max_steps, self.deadline = max_steps, deadline
        self.steps = 0
        self.reason = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.max_steps is not None and self.steps >= self.max_steps:
            self.reason = "max_steps"
        elif self.deadline is not None and time.perf_counter() >= self.deadline:
            self.reason = "max_minutes"
        if self.reason is not None:
            self.model.stop_training = True


def train_and_select(model, config: RunConfig, dataset, split, names, *, first_epoch=0, last_epoch=None,
                     best_epoch=None, best_scores=None, log_dir=None, progress=False, trainer=None, steps_done=0,
                     seconds_done=0.0, plateau=None):
    """Trains `model` epoch by epoch and ranks the split after each, with early stopping on Recall@20.

    The selection loop of `fit`, shared with `tune` so that a trial's objective is the same number
    fit selects on. Each epoch trains the compiled `model` (from `new_model`, either output mode) on
    `split.train_sequences` with `config.train`'s batch size, targets and seed (the batch order
    depends only on the seed and the epoch number), then ranks every item for the split's users
    (`evaluate_split`, the full-ranking metrics). Training stops after `config.train.patience`
    epochs without a better validation Recall@20 than `best_scores`, after epoch `last_epoch`
    (at most the model's `max_epochs` in `mfn4rec_tf.registry`, when it has one), or when a budget is
    spent: `train.max_steps` training steps in all (the epoch that reaches it ends at that step), or
    `train.max_minutes` of wall time (training and rankings; the epoch under way ends after the step
    that passes it). An epoch a budget cut short is ranked like any other, so the selected epoch
    stays the best on validation.

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
        steps_done, seconds_done: the steps and wall seconds of the epochs already done (a resumed
            run's, from its state), counted against the budgets.
        plateau: for `train.lr_schedule: plateau`, the `mfn4rec_tf.optim.PlateauState` dict to
            continue (updated in place after each epoch, before its result is yielded, so a
            checkpoint taken then carries it); None starts a fresh one.

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
    data = training_input(config, dataset, split, names, epoch=first_epoch)
    log_dir = None if log_dir is None else Path(log_dir)
    writes = trainer.writes and log_dir is not None
    writer = tf.summary.create_file_writer(str(log_dir / "validation")) if writes else None
    max_steps, max_minutes = config.train.max_steps, config.train.max_minutes
    session = time.perf_counter() - seconds_done  # when the phase would have started, had it run in one go
    total_steps = steps_done
    if config.train.lr_schedule == "plateau" and plateau is None:
        plateau = optim.PlateauState.fresh(config.train)
    for epoch in range(first_epoch, last_epoch):
        started = time.perf_counter()
        if plateau is not None:
            optim.set_learning_rate(model, plateau["learning_rate"])
            plateau["rates"].append(plateau["learning_rate"])
        budget = None
        if max_steps is not None or max_minutes is not None:
            budget = Budget(None if max_steps is None else max_steps - total_steps,
                            None if max_minutes is None else session + 60.0 * max_minutes)
            loss = trainer.fit_epoch(model, data, epoch, None if log_dir is None else log_dir / "select", progress,
                                     f"epoch {epoch + 1}/{last_epoch}", budget=budget)
        else:
            loss = trainer.fit_epoch(model, data, epoch, None if log_dir is None else log_dir / "select", progress,
                                     f"epoch {epoch + 1}/{last_epoch}")
        epoch_steps = data.steps_per_epoch if budget is None else budget.steps
        total_steps += epoch_steps
        trained = time.perf_counter() - started
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
        if plateau is not None:
            rate = plateau["learning_rate"]
            if optim.PlateauState.after_epoch(config.train, plateau, improved) != rate:
                log.info("learning rate %.3g -> %.3g (no better %s for %d epoch(s))", rate,
                         plateau["learning_rate"], SELECTION_METRIC, config.train.plateau_patience)
        if trainer.writes:
            log.info("epoch %d/%d  loss %.4f  valid %s %.4f  (best %.4f at epoch %d)  %.1fs (%d steps, %.1fs "
                     "training)", epoch + 1, last_epoch, loss, SELECTION_METRIC, scores[SELECTION_METRIC],
                     best_scores[SELECTION_METRIC], best_epoch, time.perf_counter() - started, epoch_steps, trained)
        else:
            log.info("epoch %d/%d  loss %.4f  (best epoch %d)  %.1fs", epoch + 1, last_epoch, loss, best_epoch,
                     time.perf_counter() - started)
        seconds = time.perf_counter() - session
        reasons = [epoch + 1 - best_epoch >= config.train.patience, epoch + 1 == last_epoch,
                   max_steps is not None and total_steps >= max_steps,
                   max_minutes is not None and seconds >= 60.0 * max_minutes]
        cut_short = budget is not None and budget.reason is not None
        # (multi-worker runs take no budget, so every worker reaches the same decision)
        stopped_by = budget.reason if cut_short else next((r for r, hit in zip(STOP_REASONS, reasons) if hit), None)
        yield EpochResult(epoch + 1, loss, scores, improved, best_epoch, best_scores, stopped_by is not None,
                          epoch_steps=epoch_steps, cut_short=cut_short,
                          total_steps=total_steps, seconds=seconds, stopped_by=stopped_by)
        if stopped_by is not None:
            return


def _retrain(config, run_dir, state, dataset, names, split, trainer, progress):
    """The paper's step: a fresh model on train + validation for the selected number of epochs (when a
    budget cut the selected epoch short, the last retraining epoch stops after as many steps)."""
    epochs = state["best_epoch"]
    if state["epoch"] == 0:
        _seed(config.train.seed)  # the same initial weights as the selection phase
        log.info("Retraining on train + validation for %d epoch(s).", epochs)
    model = _model_for(config, run_dir, state, dataset, trainer, split.train_sequences)
    data = training_input(config, dataset, split, names, epoch=state["epoch"])
    cut = state.get("best_epoch_steps")  # the selected epoch was cut short by a budget at this step
    rates = state.get("plateau", {}).get("rates", [])
    for epoch in range(state["epoch"], epochs):
        if config.train.lr_schedule == "plateau":  # the selection phase's rate of this epoch
            optim.set_learning_rate(model, rates[min(epoch, len(rates) - 1)])
        if cut is not None and epoch + 1 == epochs:
            budget = Budget(max_steps=cut)
            loss = trainer.fit_epoch(model, data, epoch, run_dir / "logs" / "retrain", progress,
                                     f"retrain epoch {epoch + 1}/{epochs} (first {cut} steps)", budget=budget)
            steps = budget.steps
        else:
            loss = trainer.fit_epoch(model, data, epoch, run_dir / "logs" / "retrain", progress,
                                     f"retrain epoch {epoch + 1}/{epochs}")
            steps = data.steps_per_epoch
        state["history"].append({"phase": "retrain", "epoch": epoch + 1, "loss": loss, "steps": steps})
        state["epoch"] = epoch + 1
        log.info("retrain epoch %d/%d  loss %.4f", epoch + 1, epochs, loss)
        if epoch + 1 == epochs:
            if "cold_start" in state:  # the blend calibrated on the selection model
                calibration.apply(model, state["cold_start"])
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
    the optimiser of `train` (`mfn4rec_tf.optim.make_optimizer`: by default Adam with
    `train.learning_rate`), and the model's loss on the logits (`training_loss`: softmax
    cross-entropy, or BPR's for bpr / vbpr). With `train.loss: sampled` the model trains with the
    sampled softmax (`with_training_loss`), whose sampler reads the targets of `sequences` (the
    training sequences; required then). Weights are drawn from Keras' global seed: seed first for
    reproducible weights. With `model.item_representation` `features`, `id+features` or `id+knn` the
    items of `sequences` are the model's known items (`set_known_items`); the others read and score
    as new items.
    """
    model = uncompiled_model(config, dataset, sequences)
    model_config = config.model_config(dataset)
    model = with_training_loss(model, config, sequences)
    steps = None
    if config.train.lr_schedule == "warmup_cosine":
        if sequences is None:
            raise RunError("`train.lr_schedule: warmup_cosine` needs the training sequences (for its length in steps).")
        steps = optim.steps_per_epoch(config.train, training_example_count(sequences, config.data))
    model.compile(
        optimizer=optim.make_optimizer(config.train, steps),
        loss={"logits": training_loss(model_config)},
    )
    return model


def uncompiled_model(config: RunConfig, dataset, sequences=None) -> keras.Model:
    """`new_model`'s model before its loss and optimiser: built in the output mode of `train.targets`
    with the feature tables of its modalities, and its known items set (`set_known_items`) unless its
    `model.item_representation` is `id`."""
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
    return model


def _warn_context_logits(config) -> bool:
    """Logs (and returns True) when sliding windows with a small stride train through Keras' full softmax,
    which scores every item at every position of a window, the context positions (weight 0) included;
    the chunked full softmax (`train.softmax_chunk`) computes the same loss at the trained positions only."""
    data, train = config.data, config.train
    if data.train_windows != "sliding" or train.loss != "full" or train.softmax_chunk or train.strategy != "none":
        return False
    stride = data.window_stride or data.max_length
    if registry.get(config.model.variant).sampled_loss is not True or 2 * stride > data.max_length:
        return False
    log.warning("data.train_windows: sliding with window_stride %d: Keras' full softmax scores every item at all "
                "(up to %d) positions of each window, of which at most %d are trained; --softmax-chunk 4096 "
                "(train.softmax_chunk) gives the same loss computed at the trained positions only.", stride,
                data.max_length, stride)
    return True


def training_example_count(sequences, data) -> int:
    """The training examples of an epoch over `sequences` under `data` (a `DataSection`): one per
    sequence of two or more items, or with `train_windows: sliding` its windows, `ceil((L - 1) / stride)`
    for a sequence of L items (as many as `mfn4rec_tf.data.training_windows` cuts)."""
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    lengths = lengths[lengths > 1]
    if data.train_windows != "sliding":
        return int(len(lengths))
    stride = data.window_stride or data.max_length
    return int((-(-(lengths - 1) // stride)).sum())


def known_items(sequences, num_items) -> np.ndarray:
    """`(num_items + 1,)` booleans: the items of the training `sequences` (whose IDs training sees).

    Raises:
        RunError: `sequences` is None (a features model must know which IDs it trains).
    """
    if sequences is None:
        raise RunError("`model.item_representation` features / id+features / id+knn needs the training sequences (to "
                       "know which items' IDs are trained).")
    known = np.zeros(num_items + 1, bool)
    for sequence in sequences:
        known[np.asarray(sequence, np.int64)] = True
    return known


def with_training_loss(model, config: RunConfig, sequences):
    """`model` ready for `train.loss`: itself for `full` (or a model that trains by no loss), or with
    `train.softmax_chunk` > 0 a `SampledSoftmaxModel` training with the chunked full softmax; else a
    `SampledSoftmaxModel` over the same layers: for `sampled`, with a `CandidateSampler` of
    `train.sampler` and `train.num_negatives` (seeded by `train.seed`), its probabilities from the
    targets of `sequences` (each sequence's items after the first); for `bce`, with a
    `OneNegativeSampler` (one uniform negative per position)."""
    if registry.get(config.model.variant).sampled_loss is not True:
        return model
    if config.train.loss == "full":
        if config.train.softmax_chunk <= 0 or config.train.strategy != "none":
            return model  # the Keras loss over all positions (distributed runs train with it)
        from mfn4rec_tf.chunked_softmax import ChunkedSoftmax
        from mfn4rec_tf.sampled import attach_sampler

        return attach_sampler(model, ChunkedSoftmax(config.train.softmax_chunk))
    from mfn4rec_tf.sampled import CandidateSampler, OneNegativeSampler, attach_sampler

    if config.train.loss == "bce":
        num_items = model.get_layer("item_logits").vocabulary_size - 1
        return attach_sampler(model, OneNegativeSampler(num_items, keras.random.SeedGenerator(config.train.seed + 7)))
    if sequences is None:
        raise RunError("`train.loss: sampled` needs the training sequences (for the sampler's probabilities).")

    num_items = model.get_layer("item_logits").vocabulary_size - 1
    targets = [np.asarray(s[1:], np.int64) for s in sequences if len(s) > 1]
    counts = np.bincount(np.concatenate(targets) if targets else np.zeros(0, np.int64), minlength=num_items + 1)
    sampler = CandidateSampler(config.train.sampler, counts, config.train.num_negatives,
                               keras.random.SeedGenerator(config.train.seed + 7))
    return attach_sampler(model, sampler)


def training_loss(model_config) -> keras.losses.Loss:
    """The loss a model trains with: its own (its registry entry's `loss`, e.g. BPR's pairwise loss),
    or softmax cross-entropy over every item (`mfn4rec_tf.softmax_loss`: Keras'
    `SparseCategoricalCrossentropy(from_logits=True)`'s values, from a faster kernel)."""
    from mfn4rec_tf.softmax_loss import SoftmaxCrossEntropy

    own = registry.get(model_config.variant).training_loss(model_config)
    return own if own is not None else SoftmaxCrossEntropy()


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

    def fit_epoch(self, model, data, epoch, log_dir, progress, title, budget=None) -> float:
        """Trains epoch `epoch` of `data`; a `Budget` callback may end it early (its `steps` says where)."""
        callbacks = [] if log_dir is None else [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]
        if progress:
            callbacks.append(_EpochProgress(title, data.steps_per_epoch))
        if budget is not None:
            callbacks.append(budget)
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
