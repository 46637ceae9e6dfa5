"""JSON <-> tensors: TF Serving's mapping (tensorflow_serving/util/json_tensor.cc, rewritten).

The row format (`instances`, one entry per example) and the columnar format (`inputs`) of
predict requests become NumPy arrays of the signature's dtypes; outputs become
`{"predictions": ...}` or `{"outputs": ...}`. Strings are JSON strings (inputs may also be
`{"b64": ...}`; outputs whose name ends in `_bytes` are written that way), float32 values are
written in their shortest round-tripping form, `NaN` / `Infinity` are allowed. A request the
mapping cannot read raises `ServingError` (INVALID_ARGUMENT) naming the input. Also here: the
REST rendering of the status and metadata protos.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from mfn4rec_tf.serve._common import SIGNATURE_DEF_FIELD, _invalid, _too_large

_JSON_TYPE = {bool: "Bool", int: "Number", float: "Number", str: "String", list: "Array", dict: "Object",
              type(None): "Null"}


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
                try:
                    return value.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate such as "\ud800", which JSON lets through
                    raise _JsonError(f"JSON string {_json_text(value)} is not valid Unicode (it holds a lone "
                                     "surrogate)") from None
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


def json_to_array(value, signature, name, limits=None):
    """One columnar JSON input (a value or nested lists) -> the NumPy array of its dtype.

    The shape is checked against the signature and `limits` before any value is converted.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input (wrong JSON type, ragged lists, wrong
            shape, ...); RESOURCE_EXHAUSTED over a limit.
    """
    dtype, convert = _input_converter(signature, name)
    shape = _json_shape(value)
    signature.check_shape(name, shape, limits)
    values = []
    try:
        _flatten(value, shape, 0, values, convert)
    except _JsonError as error:
        raise _invalid(f"Input '{name}': {error}") from None
    return _array(values, shape, dtype)


def instances_to_arrays(instances, signature, limits=None):
    """The row format: `instances` (one entry per example) -> input name -> NumPy array.

    A list of values when the signature has one input, else a list of objects with one key per
    input; every example must give each input the same shape (it becomes the 0-th dimension).
    """
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be a list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    if limits is not None and len(instances) > limits.max_rows:  # before anything is done per row
        raise _too_large(f"'instances' has {len(instances)} rows, over the limit of {limits.max_rows} rows a request "
                         "(--max_rows); split the request.")
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
        signature.check_shape(name, [len(items)] + item_shape, limits)
        values = []
        for index, item in enumerate(items):
            try:
                _flatten(item, item_shape, 0, values, convert)
            except _JsonError as error:
                raise _invalid(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: {error}") from None
        arrays[name] = _array(values, [len(items)] + item_shape, dtype)
    return arrays


def inputs_to_arrays(inputs, signature, limits=None):
    """The columnar format: `inputs` (an object of named inputs, or the value of a single input)."""
    names = sorted(signature.inputs)
    if not _is_object(inputs):
        if len(names) != 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors are "
                           f"required by signature '{signature.name}': {', '.join(names)}")
        return {names[0]: json_to_array(inputs, signature, names[0], limits)}
    for name in names:
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object (signature '{signature.name}' takes "
                           f"{', '.join(names)})")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise _invalid(f"Unknown input(s) {', '.join(unknown)} in 'inputs' object (signature '{signature.name}' "
                       f"takes {', '.join(names)})")
    return {name: json_to_array(inputs[name], signature, name, limits) for name in names}


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
