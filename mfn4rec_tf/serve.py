"""A model server that speaks TensorFlow Serving's REST and gRPC APIs, for versioned SavedModels.

    python -m mfn4rec_tf.serve --model_base_path saved_models/NAME [--model_name NAME]
        [--rest_api_port 8501] [--port 8500] [--host 127.0.0.1] [--file_system_poll_wait_seconds 1]
        [--num_versions 1] [--version_label LABEL=VERSION ...] [--max_body_bytes 16777216]

The official model server (the `tensorflow/serving` image) serves the same directory; this one is
for machines without it. It is generic, as TF Serving is: it serves every signature of any
SavedModel, with the input and output names, dtypes and shapes read from the SignatureDefs, and
nothing of this package's model code (nor tensorflow-text) is imported.

- REST (`--rest_api_port`, a WSGI app under waitress): `GET /v1/models/NAME[/versions/N|/labels/L]`
  (status), `GET .../metadata` (the SignatureDefs), `POST .../NAME[/versions/N|/labels/L]:predict`
  with `{"signature_name"?, "instances": [...]}` (rows) -> `{"predictions": ...}` or
  `{"inputs": {...}}` (columns) -> `{"outputs": ...}`; errors are `{"error": "..."}` with 400
  (invalid request), 404 (unknown model, version, label or path), 405, 413 (body over
  `--max_body_bytes`) or 500. The JSON mapping is TF Serving's: strings as JSON strings (inputs may
  also be `{"b64": ...}`; outputs whose name ends in `_bytes` are written that way), float32 values
  in their shortest round-tripping form, `NaN` / `Infinity` allowed.
- gRPC (`--port`): `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`,
  `tensorflow.serving.ModelService/GetModelStatus`, with the protos of `tensorflow-serving-api`.
- Versions: the `--num_versions` highest integer directories under the base path are loaded (other
  names, such as an exporter's `.staging-*` directories, are ignored). The base path is polled every
  `--file_system_poll_wait_seconds` (0: once, at start): a new version is loaded beside the served
  ones and takes over only once it has loaded; older ones are then unloaded. A version that fails to
  load is reported by the status API (state END, with the error) and the versions already loaded
  keep serving; it is tried again when its directory changes.

Port 0 picks a free port (the startup log line names it; in TF Serving, `--rest_api_port 0`
switches REST off). SIGTERM or SIGINT stops both servers (requests under way are finished) and the
command exits with status 0.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import waitress  # noqa: E402
from google.protobuf import json_format, text_format  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from waitress import wasyncore  # noqa: E402
from waitress.channel import HTTPChannel  # noqa: E402

LOG = logging.getLogger("mfn4rec_tf.serve")

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
SIGNATURE_DEF_FIELD = "signature_def"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_VERSION_DIR = re.compile(r"[0-9]+")
_NAME = r"[^/:]+"
_SPEC = rf"/v1/models/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>{_NAME}))?"
_GET_PATH = re.compile(_SPEC + r"(?P<metadata>/metadata)?")
_POST_PATH = re.compile(_SPEC + r":(?P<verb>[A-Za-z_]+)")
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "400 Bad Request",
    grpc.StatusCode.FAILED_PRECONDITION: "400 Bad Request",
    grpc.StatusCode.OUT_OF_RANGE: "400 Bad Request",
    grpc.StatusCode.NOT_FOUND: "404 Not Found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "429 Too Many Requests",
    grpc.StatusCode.UNIMPLEMENTED: "501 Not Implemented",
    grpc.StatusCode.UNAVAILABLE: "503 Service Unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "504 Gateway Timeout",
}
_GRPC_CODE = {code.value[0]: code for code in grpc.StatusCode}
_JSON_TYPE = {bool: "Bool", int: "Number", float: "Number", str: "String", list: "Array", dict: "Object",
              type(None): "Null"}


class ServingError(Exception):
    """A request that cannot be answered: a gRPC status code, a message and, for REST, the HTTP status.

    Args:
        code: the `grpc.StatusCode` (INVALID_ARGUMENT, NOT_FOUND, INTERNAL, ...).
        message: what went wrong, naming the input, signature, model or version concerned.
        http_status: the REST status line; by default the one TF Serving uses for `code`.
        headers: extra REST response headers (e.g. `Allow` for 405).
    """

    def __init__(self, code, message, http_status=None, headers=()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or _HTTP_STATUS.get(code, "500 Internal Server Error")
        self.headers = list(headers)


def _invalid(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


# --------------------------------------------------------------------------------------------------
# Signatures and versions


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
    """

    name: str
    inputs: dict
    outputs: dict
    function: object

    def check_inputs(self, arrays):
        """Raises INVALID_ARGUMENT unless `arrays` has exactly the inputs, in shapes the signature takes."""
        given, wanted = set(arrays), set(self.inputs)
        if given != wanted:
            raise _invalid(
                f"Signature '{self.name}' takes the inputs {sorted(wanted)}; the request has {sorted(given)}"
                + (f" (missing: {sorted(wanted - given)})" if wanted - given else "")
                + (f" (unknown: {sorted(given - wanted)})" if given - wanted else "") + ".")
        for name, array in arrays.items():
            spec = self.inputs[name]
            if not spec.dense or spec.dtype is None:
                raise _invalid(f"Input '{name}' of signature '{self.name}' is not a dense tensor; this "
                               "server takes dense inputs only.")
            if spec.shape is not None and (len(spec.shape) != array.ndim or any(
                    size is not None and size != got for size, got in zip(spec.shape, array.shape))):
                raise _invalid(f"Input '{name}' of signature '{self.name}' must have shape {spec.describe()}; "
                               f"got shape {_shape_string(array.shape)}.")

    def run(self, arrays):
        """Calls the signature on checked NumPy inputs; returns output name -> NumPy array.

        Raises:
            ServingError: with the code of a TensorFlow error raised while running (a runtime
                InvalidArgument, e.g. a top-k larger than the catalogue, is INVALID_ARGUMENT).
        """
        self.check_inputs(arrays)
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
    swaps it in after the call never serves a half-loaded version.
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
    return ServableVersion(int(version), Path(path), signatures, signature_def_map, saved_model)


def _fingerprint(path):
    """Changes when a version directory's content does (retrying a failed load is worth it then)."""
    parts = []
    for item in (path, path / "saved_model.pb", path / "saved_model.pbtxt", path / "variables",
                 path / "variables" / "variables.index"):
        try:
            stat = item.stat()
            parts.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


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
    """

    def __init__(self, name, base_path, num_versions=1, labels=None, loader=load_version):
        if num_versions < 1:
            raise ValueError(f"`num_versions` must be at least 1. Received: num_versions={num_versions!r}")
        self.name = name
        self.base_path = Path(base_path)
        self.num_versions = num_versions
        self.labels = dict(labels or {})
        self._loader = loader
        self._servables = {}  # version -> ServableVersion; replaced, never changed in place
        self._states = {}  # version -> (state name, error code name, error message)
        self._failed = {}  # version -> fingerprint of its directory when its load failed
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
        return {int(entry.name): Path(entry.path) for entry in entries
                if _VERSION_DIR.fullmatch(entry.name) and entry.is_dir()}

    def poll(self):
        """One pass: loads the aspired versions not loaded yet, then unloads the ones no longer needed."""
        with self._poll_lock:
            on_disk = self.scan()
            aspired = sorted(on_disk, reverse=True)[: self.num_versions]
            for version in sorted(aspired):
                if version in self._servables:
                    continue
                fingerprint = _fingerprint(on_disk[version])
                if self._failed.get(version) == fingerprint:
                    continue  # failed before and unchanged since
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
        except Exception as error:  # noqa: BLE001 - any failure is reported, the server goes on
            self._failed[version] = fingerprint
            message = f"Failed to load version {version} of model {self.name} from {path}: {error}"
            self._set_state(version, "END", "UNKNOWN", message)
            LOG.error("%s; still serving version(s) %s", message, self.loaded_versions or "none")
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


# --------------------------------------------------------------------------------------------------
# JSON <-> tensors (TF Serving's mapping, tensorflow_serving/util/json_tensor.cc, rewritten)


class _JsonError(ValueError):
    pass


def _json_text(value, limit=200):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _type_error(value, dtype):
    return _JsonError(f"JSON Value: {_json_text(value)} Type: {_JSON_TYPE.get(type(value), '?')} is not of "
                      f"expected type: {dtype.name}")


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_object(value):
    return isinstance(value, dict) and not _is_b64(value)


def _converter(dtype):
    """value -> element for the NumPy array of `dtype`, raising _JsonError; None if JSON cannot carry it."""
    if dtype == tf.string:
        def to_bytes(value):
            if isinstance(value, str):
                return value.encode("utf-8")
            if _is_b64(value):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError) as error:
                    raise _JsonError(f"Unable to base64 decode {_json_text(value)}") from error
            raise _type_error(value, dtype)
        return to_bytes
    if dtype == tf.bool:
        def to_bool(value):
            if isinstance(value, bool):
                return value
            raise _type_error(value, dtype)
        return to_bool
    if dtype in (tf.float16, tf.float32, tf.float64):
        info = np.finfo(dtype.as_numpy_dtype)
        max_int = 2 ** (info.nmant + 1) - 1

        def to_float(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error(value, dtype)
            if (abs(value) > max_int) if isinstance(value, int) else (np.isfinite(value) and abs(value) > info.max):
                raise _JsonError(f"Cannot convert JSON value: {value} to {dtype.name} without loss of precision.")
            return value
        return to_float
    if dtype.is_integer:
        info = np.iinfo(dtype.as_numpy_dtype)

        def to_int(value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(value, dtype)
            if not info.min <= value <= info.max:
                raise _JsonError(f"JSON Value: {value} is out of the range of {dtype.name}")
            return value
        return to_int
    return None


def _json_shape(value):
    """The dense shape a nested list stands for, read along the first elements (as TF Serving does)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value, shape, level, out, convert):
    """Appends the converted leaves of `value` to `out`, checking every list against `shape`."""
    if not isinstance(value, list):
        if level != len(shape):
            raise _JsonError(f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in the "
                             f"JSON DOM. Expected at level: {len(shape)}")
        out.append(convert(value))
        return
    if level >= len(shape):
        raise _JsonError(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise _JsonError(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                         f"{shape[level]}")
    for item in value:
        _flatten(item, shape, level + 1, out, convert)


def _array(values, shape, dtype):
    if dtype == tf.string:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.asarray(values, dtype=dtype.as_numpy_dtype).reshape(shape)


def _input_converter(signature, name):
    spec = signature.inputs[name]
    convert = _converter(spec.dtype) if spec.dense and spec.dtype is not None else None
    if convert is None:
        raise _invalid(f"Input '{name}' of signature '{signature.name}' is of type "
                       f"{spec.dtype.name if spec.dtype else 'DT_INVALID'}{'' if spec.dense else ' (not dense)'}, "
                       "which a JSON request cannot carry.")
    return spec.dtype, convert


def json_to_array(value, signature, name):
    """One columnar JSON input (a value or nested lists) -> the NumPy array of its dtype.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input (wrong JSON type, ragged lists, ...).
    """
    dtype, convert = _input_converter(signature, name)
    shape = _json_shape(value)
    values = []
    try:
        _flatten(value, shape, 0, values, convert)
    except _JsonError as error:
        raise _invalid(f"Input '{name}': {error}") from None
    return _array(values, shape, dtype)


def instances_to_arrays(instances, signature):
    """The row format: `instances` (one entry per example) -> input name -> NumPy array.

    A list of values when the signature has one input, else a list of objects with one key per
    input; every example must give each input the same shape (it becomes the 0-th dimension).
    """
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be a list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    names = sorted(signature.inputs)
    objects = _is_object(instances[0])
    if not objects and len(names) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input tensors are "
                       f"required by signature '{signature.name}': {', '.join(names)}")
    columns = {name: [] for name in names}
    for index, item in enumerate(instances):
        if objects:
            if not _is_object(item):
                raise _invalid(f"Expecting object but got {_JSON_TYPE.get(type(item), '?')} at item {index} of "
                               "'instances' list")
            if set(item) != set(names):
                raise _invalid(f"Failed to process element: {index} of 'instances' list. JSON object keys "
                               f"{sorted(item)} must be equal to the inputs of signature '{signature.name}': "
                               f"{', '.join(names)}")
            for name in names:
                columns[name].append(item[name])
        else:
            if _is_object(item):
                raise _invalid(f"Expecting value/list but got object at item {index} of 'instances' list")
            columns[names[0]].append(item)
    arrays = {}
    for name, items in columns.items():
        dtype, convert = _input_converter(signature, name)
        item_shape = _json_shape(items[0])
        values = []
        for index, item in enumerate(items):
            try:
                _flatten(item, item_shape, 0, values, convert)
            except _JsonError as error:
                raise _invalid(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: {error}") from None
        arrays[name] = _array(values, [len(items)] + item_shape, dtype)
    return arrays


def inputs_to_arrays(inputs, signature):
    """The columnar format: `inputs` (an object of named inputs, or the value of a single input)."""
    names = sorted(signature.inputs)
    if not _is_object(inputs):
        if len(names) != 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors are "
                           f"required by signature '{signature.name}': {', '.join(names)}")
        return {names[0]: json_to_array(inputs, signature, names[0])}
    for name in names:
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object (signature '{signature.name}' takes "
                           f"{', '.join(names)})")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise _invalid(f"Unknown input(s) {', '.join(unknown)} in 'inputs' object (signature '{signature.name}' "
                       f"takes {', '.join(names)})")
    return {name: json_to_array(inputs[name], signature, name) for name in names}


def array_to_json(array, name):
    """A NumPy output -> JSON-ready nested lists, as TF Serving writes it.

    float16/float32 values are written in their shortest form that reads back to the same float32
    (0.1, not 0.10000000149011612); strings are decoded as UTF-8 (bytes that are not UTF-8 get
    replacement characters), except outputs named `*_bytes`, written as `{"b64": ...}`.
    """
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        as_bytes = name.endswith("_bytes")
        values = np.empty(array.size, dtype=object)
        values[:] = [{"b64": base64.b64encode(bytes(item)).decode("ascii")} if as_bytes
                     else bytes(item).decode("utf-8", "replace") for item in array.reshape(-1)]
        return values.reshape(array.shape).tolist()
    if array.dtype.kind == "f" and array.dtype.itemsize <= 4 or array.dtype.name == "bfloat16":
        return array.astype(np.float32).astype(str).astype(np.float64).tolist()
    if array.dtype.kind in "biuf":
        return array.tolist()
    raise _invalid(f"Failed to write JSON value for output '{name}' of type {array.dtype}")


def rows_response(outputs):
    """`{"predictions": ...}`: the outputs split along their 0-th dimension (all must share it)."""
    names = sorted(outputs)
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information (a scalar output cannot be split into "
                           "rows; use the columnar 'inputs' format)")
        if batch is not None and outputs[name].shape[0] != batch:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {outputs[name].shape[0]} expecting: "
                           f"{batch} (use the columnar 'inputs' format)")
        batch = outputs[name].shape[0]
    values = {name: array_to_json(outputs[name], name) for name in names}
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][row] for name in names} for row in range(batch)]}


def columns_response(outputs):
    """`{"outputs": ...}`: the single output's value, or an object of named outputs."""
    values = {name: array_to_json(outputs[name], name) for name in sorted(outputs)}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def _proto_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def metadata_json(response):
    """The REST rendering of a `GetModelMetadataResponse`, as TF Serving writes it."""
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_def_map)
    return {"model_spec": _proto_json(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _proto_json(signature_def_map)}}


def status_json(response):
    """The REST rendering of a `GetModelStatusResponse`."""
    return _proto_json(response)


# --------------------------------------------------------------------------------------------------
# REST


class RestApi:
    """The WSGI application of the REST API (TF Serving's URLs and JSON).

    Args:
        manager: the `ModelManager` it serves.
        max_body_bytes: larger request bodies are refused with 413.
    """

    def __init__(self, manager, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
        self.manager = manager
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        headers = []
        try:
            status, payload = self._dispatch(environ)
        except ServingError as error:
            status, payload, headers = error.http_status, {"error": error.message}, error.headers
        except Exception as error:  # answered as 500, logged with its traceback
            LOG.exception("Internal error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, payload = "500 Internal Server Error", {"error": f"Internal error: {type(error).__name__}: {error}"}
        body = json.dumps(payload, indent=None if "predictions" in payload or "outputs" in payload else 1).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + headers)
        return [body]

    def _dispatch(self, environ):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        match = _GET_PATH.fullmatch(path)
        if match:
            if method != "GET":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{method} is not allowed on {path}; use GET",
                                   "405 Method Not Allowed", [("Allow", "GET")])
            return self._get(match)
        match = _POST_PATH.fullmatch(path)
        if match:
            if method != "POST":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{method} is not allowed on {path}; use POST",
                                   "405 Method Not Allowed", [("Allow", "POST")])
            if match["verb"] != "predict":
                raise _not_found(f"Unknown method :{match['verb']} in {path}; this server implements :predict "
                                 "(TF Serving's :classify and :regress take tf.Example signatures)")
            return self._predict(match, self._body(environ))
        raise _not_found(f"Malformed request: {method} {path} (the API is /v1/models/NAME[/versions/N|/labels/L]"
                         "[/metadata] and POST /v1/models/NAME[/versions/N|/labels/L]:predict)")

    @staticmethod
    def _spec(match):
        return dict(name=match["name"], version=int(match["version"]) if match["version"] else None,
                    label=match["label"])

    def _get(self, match):
        spec = self._spec(match)
        if match["metadata"]:
            servable = self.manager.servable(**spec)
            return "200 OK", metadata_json(self.manager.metadata(servable))
        return "200 OK", status_json(self.manager.status(**spec))

    def _body(self, environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _invalid("Content-Length is not a number") from None
        if length > self.max_body_bytes:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Request body of {length} bytes is over the limit of {self.max_body_bytes} bytes "
                               "(--max_body_bytes)", "413 Payload Too Large")
        return environ["wsgi.input"].read(length) if length else b""

    def _predict(self, match, body):
        servable = self.manager.servable(**self._spec(match))
        if not body:
            raise _invalid("JSON Parse error: The document is empty")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise _invalid(f"JSON Parse error: {error}") from None
        if not isinstance(document, dict):
            raise _invalid(f"JSON Value: {_json_text(document)} Is not object")
        signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' key must be a string value.")
        signature = servable.signature(signature_name)
        if ("instances" in document) == ("inputs" in document):
            raise _invalid("Missing 'inputs' or 'instances' key" if "inputs" not in document else
                           "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist")
        if "instances" in document:
            return "200 OK", rows_response(signature.run(instances_to_arrays(document["instances"], signature)))
        return "200 OK", columns_response(signature.run(inputs_to_arrays(document["inputs"], signature)))


class _RestServer:
    """waitress serving a WSGI app from its own thread; `stop()` finishes the requests under way."""

    def __init__(self, app, host, port, threads, max_body_bytes):
        self._map = {}
        # waitress refuses bodies over its own limit with a plain-text 413 before the app sees them; the
        # app answers the ones between `max_body_bytes` and twice that with a JSON 413.
        self._server = waitress.create_server(app, map=self._map, host=host, port=port, threads=threads,
                                              max_request_body_size=2 * max_body_bytes, ident="mfn4rec_tf.serve")
        self.port = int(self._server.effective_port)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rest-api", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.2, map=self._map, count=1)
        wasyncore.dispatcher.close(self._server)  # stop accepting (the wake-up trigger stays open)
        drain = threading.Thread(target=self._server.task_dispatcher.shutdown, kwargs={"timeout": 10})
        drain.start()  # the workers finish their requests while this loop sends the answers
        while drain.is_alive():
            wasyncore.loop(timeout=0.05, map=self._map, count=1)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
                isinstance(channel, HTTPChannel) and channel.total_outbufs_len for channel in list(self._map.values())):
            wasyncore.loop(timeout=0.05, map=self._map, count=1)
        wasyncore.close_all(self._map, ignore_all=True)

    def stop(self):
        self._stopping.set()
        self._server.pull_trigger()
        self._thread.join()


# --------------------------------------------------------------------------------------------------
# gRPC


def _abort_on_error(method):
    def wrapper(self, request, context):
        try:
            return method(self, request)
        except ServingError as error:
            code, message = error.code, error.message
        except Exception as error:  # answered as INTERNAL, logged with its traceback
            LOG.exception("Internal error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}"
        context.abort(code, message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: Predict and GetModelMetadata (Classify, Regress and
    MultiInference answer UNIMPLEMENTED)."""

    def __init__(self, manager):
        self.manager = manager

    @_abort_on_error
    def Predict(self, request):  # the gRPC method's name
        """Runs a signature on the request's TensorProtos; `output_filter` selects outputs."""
        servable = self.manager.servable_for_spec(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        arrays = {}
        for name, proto in request.inputs.items():
            spec = signature.inputs.get(name)
            if spec is not None and spec.dtype is not None and proto.dtype != spec.dtype.as_datatype_enum:
                given = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
                raise _invalid(f"Input '{name}' of signature '{signature.name}' expects {spec.dtype.name}, "
                               f"but {given} is provided")
            try:
                arrays[name] = tf.make_ndarray(proto)
            except (TypeError, ValueError) as error:
                raise _invalid(f"Input '{name}' is not a valid TensorProto: {error}") from None
        wanted = list(request.output_filter) or sorted(signature.outputs)
        unknown = [name for name in wanted if name not in signature.outputs]
        if unknown:
            raise _invalid(f"output tensor alias not found in signature '{signature.name}': {', '.join(unknown)}")
        outputs = signature.run(arrays)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.manager.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name], dtype=signature.outputs[name].dtype))
        return response

    @_abort_on_error
    def GetModelMetadata(self, request):
        """The SignatureDefs of a version (metadata_field must be ["signature_def"])."""
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise _invalid(f"Metadata field {field} is not supported (only {SIGNATURE_DEF_FIELD})")
        return self.manager.metadata(self.manager.servable_for_spec(request.model_spec))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: GetModelStatus (HandleReloadConfigRequest is UNIMPLEMENTED)."""

    def __init__(self, manager):
        self.manager = manager

    @_abort_on_error
    def GetModelStatus(self, request):
        """The states of the model's versions, or of the one the spec names."""
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        return self.manager.status(spec.name, version=spec.version.value if choice == "version" else None,
                                   label=spec.version_label if choice == "version_label" else None)


# --------------------------------------------------------------------------------------------------
# Both servers


def _resolve_host(host):
    """The first IP address of `host` (both servers bind the same one; brackets removed for IPv6)."""
    host = host.strip("[]")
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as error:
        raise OSError(f"cannot resolve --host {host}: {error}") from None


class ModelServer:
    """The REST and gRPC endpoints over one `ModelManager`, plus the thread that polls the base path.

    Args:
        manager: the model.
        host: the address both servers bind (127.0.0.1 by default: reachable from this machine only).
        rest_port: the REST port (0: a free one, see `rest_port` after `start()`).
        grpc_port: the gRPC port (0: a free one).
        poll_wait_seconds: seconds between polls of the base path; 0 polls once, at start.
        max_body_bytes: the largest request body (REST) or message (gRPC) accepted.
        rest_threads: waitress worker threads (requests answered at once).
        grpc_threads: gRPC worker threads.

    Example:
        server = ModelServer(ModelManager("mfn4rec", "saved_models/mfn4rec"), rest_port=0, grpc_port=0)
        server.start(); ...; server.stop()
    """

    def __init__(self, manager, host="127.0.0.1", rest_port=8501, grpc_port=8500, poll_wait_seconds=1.0,
                 max_body_bytes=DEFAULT_MAX_BODY_BYTES, rest_threads=16, grpc_threads=16):
        self.manager = manager
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.poll_wait_seconds = poll_wait_seconds
        self.max_body_bytes = max_body_bytes
        self.rest_threads = rest_threads
        self.grpc_threads = grpc_threads
        self._stopping = threading.Event()
        self._poller = None
        self._rest = None
        self._grpc = None

    def start(self):
        """Loads the current versions, then opens both ports; returns once they accept requests.

        Raises:
            OSError: a port cannot be bound or the host not resolved.
        """
        address = _resolve_host(self.host)
        self.manager.poll()
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.grpc_threads, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", self.max_body_bytes), ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.manager), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.manager), self._grpc)
        grpc_address = f"[{address}]:{self.grpc_port}" if ":" in address else f"{address}:{self.grpc_port}"
        try:
            self.grpc_port = self._grpc.add_insecure_port(grpc_address)
        except RuntimeError as error:
            raise OSError(f"cannot bind the gRPC port {grpc_address}: {error}") from None
        if not self.grpc_port:
            raise OSError(f"cannot bind the gRPC port {grpc_address}")
        try:
            self._rest = _RestServer(RestApi(self.manager, self.max_body_bytes), address, self.rest_port,
                                     self.rest_threads, self.max_body_bytes)
        except OSError as error:
            self._grpc.stop(None)
            raise OSError(f"cannot bind the REST port {address}:{self.rest_port}: {error}") from None
        self.rest_port = self._rest.port
        self._grpc.start()
        self._rest.start()
        if self.poll_wait_seconds > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
            self._poller.start()
        host = f"[{address}]" if ":" in address else address
        LOG.info("Serving model %s (version %s) from %s: REST at http://%s:%d/v1/models/%s, gRPC at %s:%d",
                 self.manager.name, ", ".join(map(str, self.manager.loaded_versions)) or "none yet",
                 self.manager.base_path, host, self.rest_port, self.manager.name, host, self.grpc_port)
        return self

    def _poll_loop(self):
        while not self._stopping.wait(self.poll_wait_seconds):
            try:
                self.manager.poll()
            except Exception:  # a failed poll is logged; the next one may succeed
                LOG.exception("Polling %s failed", self.manager.base_path)

    def stop(self, grace=5.0):
        """Stops polling, finishes the requests under way (up to `grace` s for gRPC), unloads."""
        self._stopping.set()
        grpc_stopped = self._grpc.stop(grace) if self._grpc is not None else None  # refuses new calls at once
        if self._rest is not None:
            self._rest.stop()
        if grpc_stopped is not None:
            grpc_stopped.wait()
        if self._poller is not None:
            self._poller.join()
        self.manager.unload_all()
        LOG.info("Stopped serving model %s", self.manager.name)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


# --------------------------------------------------------------------------------------------------
# Command line


def _label(text):
    label, sep, version = text.partition("=")
    if not sep or not label or not re.fullmatch(_NAME, label) or not _VERSION_DIR.fullmatch(version):
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION (e.g. stable=3), got {text!r}")
    return label, int(version)


def _checked(convert, valid, expected):
    """An argparse type: `convert(text)`, which `valid(value)` must accept; else "expected ..."."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):  # `valid` is False for NaN too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_port = _checked(int, lambda port: 0 <= port <= 65535, "a port number 0-65535")
_positive_int = _checked(int, lambda value: value >= 1, "a positive integer")
_seconds = _checked(float, lambda value: value >= 0, "seconds >= 0")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.serve",
        description="Serve the versions of a SavedModel over TensorFlow Serving's REST and gRPC APIs.")
    parser.add_argument("--model_base_path", required=True,
                        help="directory of integer-named version directories (e.g. saved_models/NAME)")
    parser.add_argument("--model_name", help="model name in URLs and model specs (default: the base path's name)")
    parser.add_argument("--rest_api_port", type=_port, default=8501,
                        help="REST port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8500, help="gRPC port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; 0.0.0.0 exposes the server to the network (default: %(default)s)")
    parser.add_argument("--file_system_poll_wait_seconds", type=_seconds, default=1.0,
                        help="seconds between polls for new versions; 0 polls once, at start (default: %(default)s)")
    parser.add_argument("--num_versions", type=_positive_int, default=1,
                        help="how many of the highest versions to serve (default: %(default)s)")
    parser.add_argument("--version_label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                        help="a version label, /v1/models/NAME/labels/LABEL (repeatable; default: none)")
    parser.add_argument("--max_body_bytes", type=_positive_int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest REST request body / gRPC message accepted (default: %(default)s)")
    parser.add_argument("--rest_api_num_threads", type=_positive_int, default=16,
                        help="REST worker threads (default: %(default)s)")
    parser.add_argument("--grpc_max_threads", type=_positive_int, default=16,
                        help="gRPC worker threads (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    base = Path(args.model_base_path)
    if not base.is_dir():
        parser.error(f"--model_base_path {base} is not a directory")
    name = args.model_name if args.model_name is not None else base.resolve().name
    if not re.fullmatch(_NAME, name):
        parser.error(f"--model_name {name!r} must be non-empty, without '/' or ':'")
    labels = dict(args.version_label)
    if len(labels) != len(args.version_label):
        parser.error("--version_label: a label is given twice")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    server = ModelServer(ModelManager(name, base, args.num_versions, labels), host=args.host,
                         rest_port=args.rest_api_port, grpc_port=args.port,
                         poll_wait_seconds=args.file_system_poll_wait_seconds, max_body_bytes=args.max_body_bytes,
                         rest_threads=args.rest_api_num_threads, grpc_threads=args.grpc_max_threads)
    try:
        try:
            server.start()
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        while not stop.wait(1.0):
            pass
        LOG.info("Received %s: stopping", received[0])
        server.stop()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
