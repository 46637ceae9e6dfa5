"""The gRPC services, with the protos of `tensorflow-serving-api`.

`tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`,
`tensorflow.serving.ModelService/GetModelStatus`. A `ServingError` aborts the call with its code;
any other exception is answered as INTERNAL and logged with its traceback.
"""

from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from mfn4rec_tf.serve._common import LOG, SIGNATURE_DEF_FIELD, ServingError, _invalid


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
