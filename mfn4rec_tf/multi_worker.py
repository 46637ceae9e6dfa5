"""Training across machines: `train.strategy: multi-worker`, a custom loop under
`tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20329, docs/stack.md), so
the epochs of a multi-worker run are this module's own loop; everything around them (the selection
and retraining phases, early stopping, the artifacts, resume) is `mfn4rec_tf/training.py`'s, the same
code as for one machine. Every worker runs the same command with its own `TF_CONFIG`
(`mfn4rec_tf/cluster.py`); the cluster trains one model in lockstep:

- Variables. Each worker holds a *replica model* built under the strategy's scope (which trains) and
  a plain twin outside it (which the chief evaluates and saves; Keras' `predict` on a distributed
  model would need every worker). At the start of a phase the chief's twin, fresh from the run's
  seed or read from the checkpoint, is broadcast into every worker's replica model (an all-reduce in
  which only the chief's values are not zero), so all workers start from the chief's weights,
  optimizer state and dropout-generator states; after each epoch the replica model is copied back
  into the twin.
- Data. Each global batch (`train.batch_size` sequences) is the batch a single process would train
  on at that epoch (`TrainingInput`: same seed, same order) cut into one contiguous slice per
  replica, all padded to the batch's width; each worker gathers the features of its own slices only
  (`TrainingInput.replica_batches` through `distribute_datasets_from_function`, no auto-sharding),
  and every worker runs the same number of steps per epoch. A slice left empty (a last batch with
  fewer sequences than replicas) gets a copy of the batch's first sequence that counts for nothing.
- Loss. Keras `fit` on one process divides a batch's weighted loss sum by the batch's positions (its
  unmasked ones when the logits carry a mask, as the sequence models' do). Here each replica divides
  its slice's weighted sum by that count over the whole global batch (one scalar all-reduce per
  step), which is what `tf.nn.compute_average_loss` does with a global batch size; a model's own
  added losses (MV-RNN-3mDAE's reconstruction) are divided by the number of replicas. Keras 3's
  optimizer, called inside `strategy.run`, sums the replicas' gradients, so a step is one process's
  step on the whole batch up to the order of float sums (without dropout the metrics come out equal:
  `tests/test_multi_worker.py`).
- Seeds. The initial weights are the chief's, drawn from `train.seed` as on one machine, and the data
  order comes from the seed and the epoch. The dropout generators of worker `r` are offset by
  `[r * DROPOUT_SEED_STRIDE, 0]` from the chief's, so the workers draw different masks for their
  slices (with equal states they would draw the same mask for their first rows); the chief's states
  are the ones checkpointed, and the offsets are applied again on resume.
- Decisions. Only the chief ranks the validation split; its "improved" flag is broadcast after each
  epoch, from which every worker derives the best epoch and when to stop. The start is agreed too:
  every worker reports whether it could open the data and (the chief) the run directory, and the
  workers compare a fingerprint of their settings and data with the chief's, so a mistake on one
  machine stops every worker with a message instead of a hang.

Only the chief writes (the run directory, TensorBoard logs); the others write nothing. Resume uses
the run's own files (`state.json` and the `.keras` checkpoint of the last finished epoch), not
`tf.train.CheckpointManager`: they already carry everything a resumed run needs (weights, optimizer
and dropout-generator states, the phase and history), they are written atomically, and because the
chief broadcasts what it reads, only the chief's machine needs them (no shared file system). When a
worker dies the others fail (TensorFlow's collectives cannot lose a member); start every worker
again with `--resume` and the run continues after the last finished epoch, as on one machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import keras
import numpy as np
import tensorflow as tf

from mfn4rec_tf.cluster import Cluster

log = logging.getLogger(__name__)

DROPOUT_SEED_STRIDE = 1_000_003
"""Worker `r`'s dropout generators start at the chief's state plus `[r * DROPOUT_SEED_STRIDE, 0]`."""
PHASES = ("select", "retrain", "final", "test", "done")


class WorkerError(ValueError):
    """The workers of a multi-worker run cannot train together (the message says why)."""


class WorkerLost(RuntimeError):
    """A worker stopped answering during a multi-worker run (killed, crashed, or its machine lost)."""


# What TensorFlow's collectives raise when a peer is gone (a refused or closed connection, an abort).
_LOST = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError, tf.errors.DeadlineExceededError)


@contextlib.contextmanager
def _collective(what):
    try:
        yield
    except _LOST as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WorkerLost(f"Lost a worker during {what} ({first}); start every worker again with --resume to "
                         "continue after the last finished epoch.") from None


def make_strategy(cluster: Cluster) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy over `cluster` (ring all-reduce, which runs on CPUs and GPUs). It
    must be made before TensorFlow runs anything, and it waits until every worker has started."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.jobs), task_type=cluster.task_type, task_id=cluster.task_index, rpc_layer="grpc")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not a line per all-reduce it builds
    log.info("Multi-worker training: %s; waiting for every worker", cluster.describe())
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    log.info("MultiWorkerMirroredStrategy over %d replica(s)", strategy.num_replicas_in_sync)
    return strategy


def fingerprint(text: str) -> float:
    """48 bits of the SHA-256 of `text` as a float (exact in float64, so it survives an all-reduce)."""
    return float(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))


class MultiWorker:
    """The epochs of a multi-worker run and the agreements between its workers (see the module
    docstring). `mfn4rec_tf/training.py` drives it through the same calls as Keras `fit` on one
    machine (`training.KerasFit`): `scope`, `prepare`, `fit_epoch`, `agree`, `done`; `start` agrees
    on how the run starts.

    Args:
        cluster: this process's cluster (`mfn4rec_tf.cluster.read_cluster`).
        strategy: its MultiWorkerMirroredStrategy (default: `make_strategy(cluster)`).
    """

    def __init__(self, cluster: Cluster, strategy=None):
        self.cluster = cluster
        self.strategy = strategy or make_strategy(cluster)
        self.replicas = self.strategy.num_replicas_in_sync
        self.model = self._twin = self._step = None

    @property
    def writes(self) -> bool:
        """Whether this worker writes the run directory and ranks the validation split (the chief)."""
        return self.cluster.is_chief

    def scope(self):
        """Where the twin is built or loaded: outside the strategy (a plain model)."""
        return contextlib.nullcontext()

    # Agreement between the workers.

    def exchange(self, own, chief) -> tuple[np.ndarray, np.ndarray]:
        """`(sum over the workers of own, the chief's chief)`: two float64 vectors that every worker
        passes (`chief` of any value on the others, with the same length)."""
        own = np.asarray(own, np.float64).reshape(-1)
        values = tf.constant(np.concatenate([own, np.asarray(chief, np.float64).reshape(-1)]))
        result = self._broadcast_values(values, first=len(own))
        return result[: len(own)], result[len(own):]

    def agree(self, *flags) -> tuple:
        """The chief's values of `flags` (numbers) on every worker."""
        _, chief = self.exchange([], [float(f) for f in flags])
        return tuple(chief.tolist())

    def done(self):
        """Waits until every worker is here: the other workers wait for the chief to test the model
        and write the run, so that all of them end together (a worker that leaves early makes the
        chief's coordination service report it as failed)."""
        self.exchange([], [0.0])

    def start(self, error, settings: str, state):
        """Agrees on how the run starts; returns the run's state on every worker.

        Args:
            error: the exception this worker met while opening the data (and, on the chief, the run
                directory), or None.
            settings: the text the workers' settings and data must agree on (`fingerprint`).
            state: the chief's `state.json` content (None on the others).

        Raises:
            this worker's `error`; WorkerError when another worker failed to start or the settings
            differ from the chief's.
        """
        ok = error is None and state is not None
        summary = [fingerprint(settings), PHASES.index(state["phase"]) if ok else 0,
                   state["epoch"] if ok else 0, (state["best_epoch"] or 0) if ok else 0]
        failed, chief = self.exchange([0.0 if error is None else 1.0], summary)
        if error is not None:
            raise error
        if failed[0] > 0:
            raise WorkerError("Another worker could not start the run (its log says why); fix it and start every "
                              "worker again.")
        differs = 0.0 if chief[0] == summary[0] else 1.0
        mismatches, _ = self.exchange([differs], [])
        if differs:
            raise WorkerError(f"This worker's settings or data differ from the chief's ({self.cluster.describe()}): "
                              "run every worker with the same --config, flags and dataset.")
        if mismatches[0] > 0:
            raise WorkerError("A worker's settings or data differ from the chief's (its log says which): run every "
                              "worker with the same --config, flags and dataset.")
        if self.writes:
            return state
        phase, epoch, best_epoch = int(chief[1]), int(chief[2]), int(chief[3])
        return {"phase": PHASES[phase], "epoch": epoch, "best_epoch": best_epoch or None, "best_valid": None,
                "history": []}

    def _broadcast_values(self, values, first=0):
        """The all-reduced sum of float64 vector `values`, to which only replica 0 (the chief's first)
        contributes, except for its first `first` entries, to which each worker's first replica
        contributes (a worker with several devices has several replicas, numbered together)."""
        local = tf.constant(max(self.replicas // self.cluster.num_workers, 1), tf.int32)
        with _collective("an exchange between workers"):
            result = self.strategy.run(self._broadcast_fn, args=(values, tf.constant(first, tf.int32), local))
            return self.strategy.experimental_local_results(result)[0].numpy()

    @staticmethod
    @tf.function(reduce_retracing=True)
    def _broadcast_fn(values, first, local):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        keep = tf.where(tf.range(tf.size(values)) < first, tf.equal(replica % local, 0), tf.equal(replica, 0))
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                              tf.where(keep, values, tf.zeros_like(values)))

    # Training.

    def prepare(self, twin, build):
        """Makes the replica model (`build()` under the strategy's scope, a compiled model like
        `twin`) and loads the chief's `twin` into it on every worker."""
        with self.strategy.scope():
            model = build()
            model.optimizer.build(model.trainable_variables)
        if not twin.optimizer.built:
            twin.optimizer.build(twin.trainable_variables)
        sources, targets = _state_variables(twin), _state_variables(model)
        if [tuple(v.shape) for v in sources] != [tuple(v.shape) for v in targets]:
            raise WorkerError("The checkpoint's variables do not match the model the settings build.")
        # One float64 vector (exact for float32 weights and int64 counters below 2**53): one all-reduce.
        arrays = [np.asarray(v.numpy()) for v in sources]
        flat = np.concatenate([a.astype(np.float64).reshape(-1) for a in arrays]) if arrays else np.zeros(0)
        flat = self._broadcast_values(tf.constant(flat))
        start = 0
        for variable, array in zip(targets, arrays):
            variable.assign(flat[start:start + array.size].reshape(array.shape).astype(array.dtype))
            start += array.size
        offset = np.array([self.cluster.rank * DROPOUT_SEED_STRIDE, 0])
        for variable in _seed_variables(model):
            variable.assign(variable.numpy() + offset.astype(variable.dtype))
        self.model, self._twin = model, twin
        self._step = self._make_step(model, twin)

    def _make_step(self, model, twin):
        base = twin.loss["logits"] if isinstance(twin.loss, dict) else twin.loss
        loss_fn = type(base).from_config({**base.get_config(), "reduction": "sum"})
        replicas = float(self.replicas)

        def replica_step(inputs, targets, weights, real, rows):
            with tf.GradientTape() as tape:
                logits = model(inputs, training=True)["logits"]
                total = loss_fn(targets["logits"], logits, sample_weight=weights["logits"])  # sum(loss * weight * mask)
                # Keras divides a batch's sum by its positions, or by its unmasked ones when the logits carry
                # a mask (keras/src/losses/loss.py, `apply_mask`): the same count over the global batch here.
                mask = getattr(logits, "_keras_mask", None)
                counted = tf.ones_like(targets["logits"], tf.float32) if mask is None else tf.cast(mask, tf.float32)
                counted *= tf.reshape(real, [-1] + [1] * (len(counted.shape) - 1))
                context = tf.distribute.get_replica_context()
                positions = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(counted))
                loss = tf.math.divide_no_nan(total, tf.cast(positions, total.dtype))
                if model.losses:  # a model's own added losses (means over its slice): their mean over replicas
                    loss += tf.add_n([tf.cast(extra, loss.dtype) for extra in model.losses]) / replicas
            variables = model.trainable_variables
            model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss * tf.cast(rows, loss.dtype)

        @tf.function
        def step(iterator):
            return self.strategy.run(replica_step, args=next(iterator))

        return step

    def fit_epoch(self, twin, data, epoch, log_dir, progress, title) -> float:
        """Trains epoch `epoch` (0-based) of `data` (a `TrainingInput`) on every worker; copies the
        result into `twin`; returns the epoch's loss (the mean over its batches weighted by their
        sequences, as Keras `fit` reports it)."""
        if twin is not self._twin:
            raise WorkerError("fit_epoch got another model than the one `prepare` loaded.")
        batches = self.strategy.distribute_datasets_from_function(
            lambda context: data.replica_dataset(epoch, context))
        iterator = iter(batches)
        bar = None
        if progress and self.writes:
            print(title, flush=True)
            bar = keras.utils.Progbar(data.steps_per_epoch, unit_name="step")
        weighted = 0.0
        with _collective(f"epoch {epoch + 1}"):
            for step in range(data.steps_per_epoch):
                shares = self.strategy.experimental_local_results(self._step(iterator))
                weighted += float(sum(s.numpy() for s in shares))
                if bar is not None:
                    bar.update(step + 1)
        total, _ = self.exchange([weighted], [])
        loss = float(total[0]) / data.num_examples
        for source, target in zip(_state_variables(self.model), _state_variables(twin)):
            target.assign(source.numpy())
        for variable in _seed_variables(twin):  # the chief's generator states (worker r's are offset)
            variable.assign(variable.numpy() - np.array([self.cluster.rank * DROPOUT_SEED_STRIDE, 0], variable.dtype))
        if log_dir is not None and self.writes:
            with tf.summary.create_file_writer(str(log_dir)).as_default():
                tf.summary.scalar("epoch_loss", loss, step=epoch)
        return loss


def _state_variables(model) -> list:
    """What a step changes and a checkpoint keeps: the model's variables (weights, dropout
    generators), then the optimizer's."""
    return list(model.variables) + list(model.optimizer.variables)


def _seed_variables(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]
