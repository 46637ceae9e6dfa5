"""The gRPC services, with the protos of `tensorflow-serving-api`.

`tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`,
`tensorflow.serving.ModelService/GetModelStatus`. A `ServingError` aborts the call with its code;
any other exception is answered as INTERNAL (without its text) and logged with its traceback.

A Predict input's TensorProto is checked before it is expanded into an array: its dtype, its
claimed shape (no negative or unknown dimension; the signature's shape; `--max_rows` and
`--max_elements`) and its number of values (at most the shape's elements; fewer fill the tensor
with the last one, as TensorFlow does; `tensor_content` exactly the bytes of the shape). Before
that, the serialized request is parsed only once it fits in the server's in-flight byte budget
(`predict_serialized`; UNAVAILABLE after the wait), since parsing takes up to ~16x its size.
"""

from __future__ import annotations

import grpc
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mfn4rec_tf.serve._common import (
    INTERNAL_ERROR_MESSAGE,
    LOG,
    SIGNATURE_DEF_FIELD,
    ByteBudget,
    Limits,
    ServingError,
    _invalid,
)

# the TensorProto field that holds the values of each dtype (tensorflow/core/framework/tensor.proto)
_VALUE_FIELD = {
    tf.float16: "half_val", tf.bfloat16: "half_val", tf.float32: "float_val", tf.float64: "double_val",
    tf.int8: "int_val", tf.int16: "int_val", tf.int32: "int_val", tf.uint8: "int_val", tf.uint16: "int_val",
    tf.int64: "int64_val", tf.uint32: "uint32_val", tf.uint64: "uint64_val", tf.bool: "bool_val",
    tf.string: "string_val", tf.complex64: "scomplex_val", tf.complex128: "dcomplex_val",
}


def _dtype_name(enum):
    try:
        return tf.dtypes.as_dtype(enum).name if enum else "DT_INVALID"
    except TypeError:
        return f"an unknown dtype ({enum})"


def _claimed_shape(proto, name):
    """The shape a TensorProto claims, checked for an unknown rank and negative dimensions."""
    if proto.tensor_shape.unknown_rank:
        raise _invalid(f"Input '{name}' has a TensorProto of unknown rank; give its shape.")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise _invalid(f"Input '{name}' has a negative dimension in its shape "
                       f"[{','.join(map(str, shape[:40]))}{',...' if len(shape) > 40 else ''}].")
    return shape


def _check_values(proto, dtype, shape, name):
    """INVALID_ARGUMENT unless the TensorProto's values fit its (already limited) shape."""
    elements = 1
    for size in shape:
        elements *= size
    shape_text = "[" + ",".join(map(str, shape)) + "]"
    if proto.tensor_content:
        if dtype == tf.string:
            raise _invalid(f"Input '{name}': a string TensorProto cannot use tensor_content.")
        if len(proto.tensor_content) != elements * dtype.size:
            raise _invalid(f"Input '{name}' has {len(proto.tensor_content)} bytes of tensor_content; shape "
                           f"{shape_text} of {dtype.name} takes {elements * dtype.size}.")
        return
    field = _VALUE_FIELD.get(dtype)
    if field is None:
        raise _invalid(f"Input '{name}' is of type {dtype.name}, which this server cannot read from a TensorProto.")
    count = len(getattr(proto, field)) // (2 if dtype.is_complex else 1)
    if count > elements:
        raise _invalid(f"Input '{name}' has {count} values for shape {shape_text} ({elements} elements).")


def _abort_on_error(method):
    def wrapper(self, request, context):
        try:
            return method(self, request)
        except ServingError as error:
            code, message = error.code, error.message
        except Exception:  # answered as INTERNAL without the exception's text, logged with its traceback
            LOG.exception("Internal error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE
        context.abort(code, message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: Predict and GetModelMetadata (Classify, Regress and
    MultiInference answer UNIMPLEMENTED)."""

    def __init__(self, manager, limits=None, inflight=None, busy_wait_seconds=30.0):
        self.manager = manager
        self.limits = limits or Limits()
        self.inflight = inflight or ByteBudget(2 * 16 * 1024 * 1024)
        self.busy_wait_seconds = busy_wait_seconds

    def predict_serialized(self, data, context):
        """Predict on the serialized request: it is parsed only once its bytes fit in the in-flight budget."""
        if not self.inflight.acquire(len(data), self.busy_wait_seconds):
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"The server is busy: requests of {self.inflight.used} bytes are being handled, and this "
                          f"one ({len(data)} bytes) does not fit under {self.inflight.limit} "
                          "(--max_inflight_body_bytes); try again later")
        try:
            try:
                request = predict_pb2.PredictRequest.FromString(data)
            except DecodeError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The message is not a PredictRequest")
            return self.Predict(request, context)
        finally:
            self.inflight.release(len(data))

    @_abort_on_error
    def Predict(self, request):  # the gRPC method's name
        """Runs a signature on the request's TensorProtos; `output_filter` selects outputs."""
        servable = self.manager.servable_for_spec(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        signature.check_names(request.inputs)  # before any input is read
        arrays = {}
        for name, proto in request.inputs.items():
            spec = signature.inputs[name]
            if spec.dtype is not None and proto.dtype != spec.dtype.as_datatype_enum:
                raise _invalid(f"Input '{name}' of signature '{signature.name}' expects {spec.dtype.name}, "
                               f"but {_dtype_name(proto.dtype)} is provided")
            shape = _claimed_shape(proto, name)
            signature.check_shape(name, shape, self.limits)
            _check_values(proto, spec.dtype, shape, name)
            try:
                arrays[name] = tf.make_ndarray(proto)
            except (TypeError, ValueError) as error:
                raise _invalid(f"Input '{name}' is not a valid TensorProto: {error}") from None
        wanted = list(request.output_filter) or sorted(signature.outputs)
        unknown = [name for name in wanted if name not in signature.outputs]
        if unknown:
            raise _invalid(f"output tensor alias not found in signature '{signature.name}': {', '.join(unknown)}")
        outputs = signature.run(arrays, self.limits)
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
