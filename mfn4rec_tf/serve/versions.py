"""The versions of one model: loading a SavedModel version, its signatures, polling and hot reload.

`ModelManager` serves the `num_versions` highest integer directories under a base path (other
names, such as an exporter's `.staging-*` directories, are ignored). Each `poll()` loads a new
version beside the served ones; it takes over only once it has loaded, and older ones are then
unloaded. A version that fails to load is reported by `status()` (state END, with the error) and
the versions already loaded keep serving; it is tried again when its directory changes.

A version's `assets.extra/tf_serving_warmup_requests` (TensorFlow Serving's warm-up file, a
TFRecord of `PredictionLog`s; `python -m mfn4rec_tf.export` writes one) is replayed before the
version takes over, so its first real requests do not pay for tracing or XLA compilation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, prediction_log_pb2

from mfn4rec_tf.serve._common import (
    _GRPC_CODE,
    DEFAULT_SIGNATURE,
    LOG,
    MAX_RANK,
    SERVE_TAG,
    SIGNATURE_DEF_FIELD,
    ServingError,
    _invalid,
    _not_found,
    _too_large,
    _version_number,
)
from mfn4rec_tf.serve.batching import Batcher


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature, as its SignatureDef's TensorInfo states it.

    Args:
        dtype: the `tf.DType`, or None for a DT_INVALID TensorInfo (an init op's output).
        shape: one int or None (unknown size) per dimension, or None for an unknown rank.
        dense: False for sparse or composite tensors (which requests cannot carry).
    """

    dtype: tf.DType | None
    shape: tuple | None
    dense: bool = True

    @classmethod
    def from_tensor_info(cls, info):
        """The spec of a `tensorflow.TensorInfo` proto."""
        dtype = tf.dtypes.as_dtype(info.dtype) if info.dtype else None
        shape = None if info.tensor_shape.unknown_rank else tuple(
            None if dim.size < 0 else dim.size for dim in info.tensor_shape.dim)
        return cls(dtype, shape, info.WhichOneof("encoding") == "name")

    def describe(self):
        """The shape as TF Serving's metadata shows it: [-1,3] (-1 = any size), [?] for any rank."""
        return _shape_string(self.shape)


def _shape_string(shape):
    if shape is None:
        return "[?]"
    return "[" + ",".join("-1" if size is None else str(size) for size in shape) + "]"


@dataclass(frozen=True)
class Signature:
    """A callable signature of a loaded version.

    Args:
        name: the signature key (`serving_default`, ...).
        inputs: input name -> `TensorSpec`.
        outputs: output name -> `TensorSpec`.
        function: the SavedModel's concrete function; it takes the inputs as keyword tensors and
            returns a dict of output tensors. Concrete functions are safe to call from several
            threads at once, so calls take no lock.
        batcher: a `batching.Batcher` that merges concurrent calls, or None (each runs alone).
    """

    name: str
    inputs: dict
    outputs: dict
    function: object
    batcher: object = None

    def check_names(self, names):
        """Raises INVALID_ARGUMENT unless `names` are exactly the signature's inputs."""
        given, wanted = set(names), set(self.inputs)
        if given != wanted:
            raise _invalid(
                f"Signature '{self.name}' takes the inputs {sorted(wanted)}; the request has {sorted(given)}"
                + (f" (missing: {sorted(wanted - given)})" if wanted - given else "")
                + (f" (unknown: {sorted(given - wanted)})" if given - wanted else "") + ".")

    def check_shape(self, name, shape, limits=None):
        """Checks the shape a request gives (or claims for) input `name`, before it is built.

        Raises:
            ServingError: INVALID_ARGUMENT for a shape the signature does not take (or a sparse
                input); RESOURCE_EXHAUSTED (REST 413) for more rows or elements than `limits` allow.
        """
        spec = self.inputs[name]
        if not spec.dense or spec.dtype is None:
            raise _invalid(f"Input '{name}' of signature '{self.name}' is not a dense tensor; this "
                           "server takes dense inputs only.")
        shape = tuple(shape)
        got = f"shape {_shape_string(shape)}" if len(shape) <= MAX_RANK else f"a value of rank {len(shape)}"
        if spec.shape is not None and (len(spec.shape) != len(shape) or any(
                size is not None and size != given for size, given in zip(spec.shape, shape))):
            raise _invalid(f"Input '{name}' of signature '{self.name}' must have shape {spec.describe()}; got {got}.")
        if len(shape) > MAX_RANK:
            raise _invalid(f"Input '{name}' of signature '{self.name}' has rank {len(shape)}; this server takes "
                           f"at most {MAX_RANK} dimensions.")
        if limits is None:
            return
        if shape and shape[0] > limits.max_rows:
            raise _too_large(f"Input '{name}' has {shape[0]} rows, over the limit of {limits.max_rows} rows a "
                             "request (--max_rows); split the request.")
        elements = 1
        for size in shape:
            elements *= size
        if elements > limits.max_elements:
            raise _too_large(f"Input '{name}' has {elements} elements, over the limit of {limits.max_elements} "
                             "(--max_elements); split the request.")

    def check_inputs(self, arrays, limits=None):
        """Raises INVALID_ARGUMENT unless `arrays` has exactly the inputs, in shapes the signature takes,
        and RESOURCE_EXHAUSTED when they ask for more work than `limits` allow."""
        self.check_names(arrays)
        for name, array in arrays.items():
            self.check_shape(name, array.shape, limits)
        if limits is None:
            return
        k = arrays.get("k")
        if k is None or k.ndim != 0 or k.dtype.kind not in "iu":
            return
        rows = max([array.shape[0] for array in arrays.values() if array.ndim] or [1])
        if rows * int(k) > limits.max_rows_times_k:
            raise _too_large(f"{rows} rows x k={int(k)} = {rows * int(k)} results, over the limit of "
                             f"{limits.max_rows_times_k} (--max_rows_times_k); ask for fewer rows or a smaller k.")

    def run(self, arrays, limits=None):
        """Calls the signature on NumPy inputs (checked here, with `limits`); returns output name -> NumPy array.

        Raises:
            ServingError: with the code of a TensorFlow error raised while running (a runtime
                InvalidArgument, e.g. a top-k larger than the catalogue, is INVALID_ARGUMENT).
        """
        self.check_inputs(arrays, limits)
        if self.batcher is not None:
            return self.batcher.run(self, arrays)
        return self.call(arrays)

    def call(self, arrays):
        """Calls the signature on checked NumPy inputs; returns output name -> NumPy array (see `run`)."""
        try:
            tensors = {name: tf.constant(array, dtype=self.inputs[name].dtype) for name, array in arrays.items()}
            result = self.function(**tensors)
        except tf.errors.OpError as error:
            raise ServingError(_GRPC_CODE.get(error.error_code, grpc.StatusCode.INTERNAL), error.message) from error
        return {name: value.numpy() for name, value in result.items()}


@dataclass(frozen=True)
class ServableVersion:
    """One loaded version of the model.

    Args:
        version: the version number (the directory's name).
        path: the version directory.
        signatures: signature name -> `Signature` (the callable ones).
        signature_def_map: every SignatureDef of the serving MetaGraph (`__saved_model_init_op`
            included), as `GetModelMetadata` returns it.
        saved_model: the loaded object; holding it keeps the variables and tables alive.
    """

    version: int
    path: Path
    signatures: dict
    signature_def_map: get_model_metadata_pb2.SignatureDefMap
    saved_model: object

    def with_batching(self, options):
        """This version with every signature merging concurrent calls (`batching.Batcher(options)`)."""
        signatures = {name: dataclasses.replace(signature, batcher=Batcher(options))
                      for name, signature in self.signatures.items()}
        return dataclasses.replace(self, signatures=signatures)

    def signature(self, name):
        """The signature `name` ('' or None: `serving_default`); INVALID_ARGUMENT if there is none."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise _invalid(f'Serving signature name: "{name}" not found in signature def '
                           f"(this version has: {', '.join(sorted(self.signatures)) or 'none'})")
        return self.signatures[name]


def read_meta_graph(path, tag=SERVE_TAG):
    """The MetaGraphDef tagged `tag` of the SavedModel in `path` (saved_model.pb or .pbtxt).

    Raises:
        ValueError: no SavedModel in `path`, or none of its MetaGraphs has the tag.
    """
    path = Path(path)
    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    elif (path / "saved_model.pbtxt").is_file():
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    else:
        raise ValueError(f"{path} holds no saved_model.pb or saved_model.pbtxt")
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"the SavedModel in {path} has no MetaGraph tagged '{tag}'")


def load_version(path, version):
    """Loads the SavedModel in `path` as `version`; returns a `ServableVersion`.

    The returned object is complete (every signature callable) or this raises: a caller that
    swaps it in after the call never serves a half-loaded version. Its warm-up file is replayed
    first (`warm_up`).
    """
    meta_graph = read_meta_graph(path)
    saved_model = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    signatures = {}
    for name, function in saved_model.signatures.items():
        signature_def = meta_graph.signature_def.get(name)
        if signature_def is None:
            continue
        signatures[name] = Signature(
            name,
            {key: TensorSpec.from_tensor_info(info) for key, info in signature_def.inputs.items()},
            {key: TensorSpec.from_tensor_info(info) for key, info in signature_def.outputs.items()},
            function)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in meta_graph.signature_def.items():
        signature_def_map.signature_def[name].CopyFrom(signature_def)
    started = time.perf_counter()
    replayed = warm_up(path, signatures)
    if replayed:
        LOG.info("Warmed up version %s with %d request(s) in %.2f s", version, replayed, time.perf_counter() - started)
    return ServableVersion(int(version), Path(path), signatures, signature_def_map, saved_model)


WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
"""TensorFlow Serving's limit on the records of a warm-up file, kept here."""


def warm_up(path, signatures) -> int:
    """Replays the warm-up file of the version in `path` (if any) through `signatures`; returns the
    number of requests replayed.

    `predict_log` records are run (their signature, else `serving_default`); other kinds
    (classify, regress, ...) are skipped with a warning, as this server has no such APIs.

    Raises:
        ValueError: more than `MAX_WARMUP_RECORDS` records, or a record that is not a
            `PredictionLog` or names a signature the version does not have.
        ServingError: a request that fails (the version then fails to load, as in TF Serving).
        tensorflow.errors.OpError: an unreadable TFRecord file.
    """
    file = Path(path) / WARMUP_FILE
    if not file.is_file():
        return 0
    replayed = skipped = 0
    for number, record in enumerate(tf.data.TFRecordDataset(str(file)), start=1):
        if number > MAX_WARMUP_RECORDS:
            raise ValueError(f"{file} holds more than {MAX_WARMUP_RECORDS} warm-up records")
        try:
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        except Exception as error:  # protobuf's DecodeError
            raise ValueError(f"record {number} of {file} is not a PredictionLog: {error}") from None
        if entry.WhichOneof("log_type") != "predict_log":
            skipped += 1
            continue
        request = entry.predict_log.request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if name not in signatures:
            raise ValueError(f"record {number} of {file} asks for signature {name!r}, which this version lacks")
        signatures[name].run({key: tf.make_ndarray(proto) for key, proto in request.inputs.items()})
        replayed += 1
    if skipped:
        LOG.warning("Skipped %d warm-up record(s) of %s that are not predict_log records", skipped, file)
    return replayed


_FINGERPRINT_MAX_ENTRIES = 10_000


def _fingerprint(path):
    """A digest of a version directory's tree: every entry's relative path, type, size, mtime, ctime
    and inode (the first 10,000 entries, walked in name order).

    It changes when a copy completes or a file is written again, even with the same size and a
    preserved mtime (`cp -p`, rsync): writing a file changes its ctime, and a new copy its inode.
    """
    digest = hashlib.blake2b(digest_size=16)
    count = 0
    stack = [Path(path)]
    while stack and count < _FINGERPRINT_MAX_ENTRIES:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            stat = folder.stat()
        except OSError as error:
            digest.update(f"{folder}: {type(error).__name__}\n".encode("utf-8", "replace"))
            continue
        digest.update(f"{folder} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino}\n".encode("utf-8", "replace"))
        for entry in entries:
            count += 1
            try:
                stat = entry.stat(follow_symlinks=True)
                is_dir = entry.is_dir()
            except OSError:
                digest.update(f"{entry.path} missing\n".encode("utf-8", "replace"))
                continue
            if is_dir:
                stack.append(Path(entry.path))
                continue
            digest.update(f"{entry.path} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino}\n"
                          .encode("utf-8", "replace"))
    digest.update(f"entries {count}".encode())
    return digest.hexdigest()


class ModelManager:
    """The versions of one model: which are loaded, their states, polling the base path.

    Reads never lock: the loaded versions are one dict that the poller replaces as a whole (after a
    complete load, or to drop a version); a request takes the dict once and holds its version until
    it is answered, so an unloaded version finishes the requests already under way.

    Args:
        name: the model name of the URLs and model specs.
        base_path: the directory holding `<integer version>/` SavedModel directories.
        num_versions: how many of the highest versions to serve at once.
        labels: version label -> version number (`/labels/L` in URLs, `version_label` in specs).
        loader: `loader(path, version) -> ServableVersion`; it raises if the version cannot be served.
        retry_seconds: (first, most) seconds before a failed version whose directory has not
            changed is tried again; the wait doubles after each failure up to `most`. A change in
            the directory (a file added, completed or written again) retries at the next poll.
        batching: a `batching.BatchingOptions`: each loaded version merges concurrent calls of a
            signature (`--enable_batching`); None (default): every call runs alone.
    """

    def __init__(self, name, base_path, num_versions=1, labels=None, loader=load_version,
                 retry_seconds=(5.0, 300.0), batching=None):
        if num_versions < 1:
            raise ValueError(f"`num_versions` must be at least 1. Received: num_versions={num_versions!r}")
        self.name = name
        self.base_path = Path(base_path)
        self.num_versions = num_versions
        self.labels = dict(labels or {})
        self._loader = loader
        self.batching = batching
        self._servables = {}  # version -> ServableVersion; replaced, never changed in place
        self._states = {}  # version -> (state name, error code name, error message)
        self._failed = {}  # version -> (fingerprint of its directory at the failed load, next retry time, wait)
        self.retry_seconds = tuple(retry_seconds)
        self._ignored = set()  # directory names of digits that are no version number (over int64)
        self._state_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._missing_base_logged = False

    @property
    def loaded_versions(self):
        """The versions being served, highest first."""
        return sorted(self._servables, reverse=True)

    def scan(self):
        """Version number -> directory, for the integer-named directories under the base path."""
        try:
            entries = list(os.scandir(self.base_path))
        except OSError as error:
            if not self._missing_base_logged:
                LOG.warning("Cannot list the base path of model %s: %s", self.name, error)
                self._missing_base_logged = True
            return {}
        self._missing_base_logged = False
        versions, ignored = {}, set()
        for entry in entries:
            if not entry.name.isascii() or not entry.name.isdigit() or not entry.is_dir():
                continue
            number = _version_number(entry.name)
            if number is None:
                ignored.add(entry.name)
                if entry.name not in self._ignored:
                    LOG.warning("Directory %s of model %s ignored: a version number must be at most 2^63-1 (int64)",
                                entry.path if len(entry.name) <= 40 else f"{self.base_path}/{entry.name[:40]}...",
                                self.name)
                continue
            versions[number] = Path(entry.path)
        self._ignored = ignored
        return versions

    def poll(self):
        """One pass: loads the aspired versions not loaded yet, then unloads the ones no longer needed."""
        with self._poll_lock:
            on_disk = self.scan()
            aspired = sorted(on_disk, reverse=True)[: self.num_versions]
            for version in sorted(aspired):
                if version in self._servables:
                    continue
                fingerprint = _fingerprint(on_disk[version])
                failed = self._failed.get(version)
                if failed is not None and failed[0] == fingerprint and time.monotonic() < failed[1]:
                    continue  # failed before, unchanged since, and not due for a retry yet
                self._load(version, on_disk[version], fingerprint)
            present = [version for version in self._servables if version in on_disk]
            keep = set(sorted(present, reverse=True)[: self.num_versions]) or set(self._servables)
            for version in sorted(set(self._servables) - keep):
                self._unload(version)

    def _load(self, version, path, fingerprint):
        self._set_state(version, "LOADING")
        start = time.perf_counter()
        try:
            servable = self._loader(path, version)
            if self.batching is not None:
                servable = servable.with_batching(self.batching)
        except Exception as error:
            first, most = self.retry_seconds
            previous = self._failed.get(version)
            wait = min(2 * previous[2], most) if previous is not None and previous[0] == fingerprint else first
            self._failed[version] = (fingerprint, time.monotonic() + wait, wait)
            message = f"Failed to load version {version} of model {self.name} from {path}: {error}"
            self._set_state(version, "END", "UNKNOWN", message)
            LOG.error("%s; still serving version(s) %s; tried again when its directory changes, else in %g s",
                      message, self.loaded_versions or "none", wait)
            return
        self._failed.pop(version, None)
        self._servables = {**self._servables, version: servable}
        self._set_state(version, "AVAILABLE")
        LOG.info("Loaded version %d of model %s from %s in %.2f s (signatures: %s)", version, self.name, path,
                 time.perf_counter() - start, ", ".join(sorted(servable.signatures)))

    def _unload(self, version):
        self._set_state(version, "UNLOADING")
        self._servables = {key: value for key, value in self._servables.items() if key != version}
        self._set_state(version, "END")
        LOG.info("Unloaded version %d of model %s", version, self.name)

    def unload_all(self):
        """Unloads every version (at shutdown)."""
        with self._poll_lock:
            for version in self.loaded_versions:
                self._unload(version)

    def _set_state(self, version, state, error_code="OK", error_message=""):
        with self._state_lock:
            self._states[version] = (state, error_code, error_message)

    def _check_name(self, name, request):
        if name != self.name:
            raise _not_found(f"Servable not found for request: {request} (this server serves model {self.name})")

    def servable(self, name, version=None, label=None):
        """The loaded version a request names: `version`, the version of `label`, or the latest.

        Raises:
            ServingError: NOT_FOUND for another model name, a version not loaded, an unknown label.
        """
        servables = self._servables  # one snapshot for the whole request
        if label is not None:
            self._check_name(name, f"Label({name}, {label})")
            if label not in self.labels:
                raise _not_found(f"Unrecognized servable version label: {label} (model {self.name} has "
                                 f"{', '.join(sorted(self.labels)) or 'no labels'})")
            version = self.labels[label]
            if version not in servables:
                raise _not_found(f"Servable not found for request: Specific({name}, {version}): label {label} "
                                 f"names version {version}, which is not loaded")
            return servables[version]
        if version is None:
            self._check_name(name, f"Latest({name})")
            if not servables:
                raise _not_found(f"Servable not found for request: Latest({name}): no version is loaded")
            return servables[max(servables)]
        self._check_name(name, f"Specific({name}, {version})")
        if version not in servables:
            raise _not_found(f"Servable not found for request: Specific({name}, {version})")
        return servables[version]

    def servable_for_spec(self, model_spec):
        """`servable()` for a `tensorflow.serving.ModelSpec` proto."""
        choice = model_spec.WhichOneof("version_choice")
        return self.servable(model_spec.name,
                             version=model_spec.version.value if choice == "version" else None,
                             label=model_spec.version_label if choice == "version_label" else None)

    def status(self, name, version=None, label=None):
        """A `GetModelStatusResponse`: every version seen (highest first), or the one asked for.

        Raises:
            ServingError: NOT_FOUND for another model name, an unknown label or version.
        """
        if name != self.name:
            raise _not_found(f"Could not find any versions of model {name}")
        with self._state_lock:
            states = dict(self._states)
        if label is not None:
            if label not in self.labels:
                raise _not_found(f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        if version is not None:
            if version not in states:
                raise _not_found(f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        if not states:
            raise _not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(states, reverse=True):
            state, error_code, error_message = states[number]
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = tf.errors.UNKNOWN if error_code == "UNKNOWN" else tf.errors.OK
            entry.status.error_message = error_message
        return response

    def metadata(self, servable):
        """The `GetModelMetadataResponse` of a loaded version (its SignatureDefs)."""
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map)
        return response

