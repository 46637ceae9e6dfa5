"""A model server that speaks TensorFlow Serving's REST and gRPC APIs, for versioned SavedModels.

    python -m mfn4rec_tf.serve --model_base_path saved_models/NAME [--model_name NAME]
        [--rest_api_port 8501] [--port 8500] [--host 127.0.0.1] [--file_system_poll_wait_seconds 1]
        [--num_versions 1] [--version_label LABEL=VERSION ...] [--max_body_bytes 16777216]
        [--max_rows 1024] [--max_rows_times_k 100000] [--max_elements 1000000]
        [--rest_connection_limit 200] [--rest_idle_timeout 30] [--rest_request_timeout 60]
        [--rest_cleanup_interval 1] [--rest_backlog 1024] [--grpc_max_concurrent_rpcs 64]
        [--max_inflight_body_bytes 2*max_body_bytes]
        [--enable_batching [--max_batch_size 64] [--pad_variable_length_inputs]]

The official model server (the `tensorflow/serving` image) serves the same directory; this one is
for machines without it. It is generic, as TF Serving is: it serves every signature of any
SavedModel, with the input and output names, dtypes and shapes read from the SignatureDefs, and
nothing of this package's model code (nor tensorflow-text) is imported.

- REST (`--rest_api_port`, a WSGI app under waitress): `GET /v1/models/NAME[/versions/N|/labels/L]`
  (status), `GET .../metadata` (the SignatureDefs), `POST .../NAME[/versions/N|/labels/L]:predict`
  with `{"signature_name"?, "instances": [...]}` (rows) -> `{"predictions": ...}` or
  `{"inputs": {...}}` (columns) -> `{"outputs": ...}`; errors are `{"error": "..."}` with 400
  (invalid request), 404 (unknown model, version, label or path), 405, 413 (body over
  `--max_body_bytes`, or more work than `--max_rows`, `--max_rows_times_k` or `--max_elements`
  allow) or 500 (without the exception's text, which is logged). The JSON mapping is TF
  Serving's: strings as JSON strings (inputs may also be `{"b64": ...}`; outputs whose name ends
  in `_bytes` are written that way), float32 values in their shortest round-tripping form, `NaN` /
  `Infinity` allowed.
- gRPC (`--port`): `tensorflow.serving.PredictionService/Predict` and `/GetModelMetadata`,
  `tensorflow.serving.ModelService/GetModelStatus`, with the protos of `tensorflow-serving-api`.
- Versions: the `--num_versions` highest integer directories under the base path are loaded (other
  names, such as an exporter's `.staging-*` directories, are ignored). The base path is polled every
  `--file_system_poll_wait_seconds` (0: once, at start): a new version is loaded beside the served
  ones and takes over only once it has loaded; older ones are then unloaded. A version that fails to
  load is reported by the status API (state END, with the latest attempt's error) and the versions
  already loaded keep serving; it is tried again when anything in its directory changes, else with
  back-off (5 s doubling to 300 s). Directories numbered over int64 are ignored (one warning).
- Limits: a request over `--max_rows`, `--max_rows_times_k` or `--max_elements` is refused before
  its inputs become tensors (a gRPC TensorProto's claimed shape is checked before it is expanded);
  REST connections are bounded (`--rest_connection_limit`; idle and slow clients are closed to make
  room and after `--rest_idle_timeout` / `--rest_request_timeout`), gRPC calls by
  `--grpc_max_concurrent_rpcs`, REST bodies and gRPC messages handled at once by
  `--max_inflight_body_bytes` (then 503 / UNAVAILABLE). A non-loopback `--host` logs that there is
  no TLS or authentication.
- Warm-up: a version's `assets.extra/tf_serving_warmup_requests` (TF Serving's format; the
  exporter writes one) is replayed before the version serves.
- Batching (`--enable_batching`): concurrent requests to one signature share one model call; a
  request that finds the signature idle runs at once (no batch timeout), see `batching`.

Port 0 picks a free port (the startup log line names it; in TF Serving, `--rest_api_port 0`
switches REST off). SIGTERM or SIGINT stops both servers (requests under way are finished) and the
command exits with status 0.

Modules (each imports only the ones above it):

- `_common`: the logger, the constants and `ServingError` (a gRPC code, a message, an HTTP status)
- `batching`: `Batcher` and `BatchingOptions`, merging concurrent calls of one signature
- `versions`: `ModelManager` (the versions of one model, polling and hot reload) and loading a
  SavedModel version (`load_version`, `ServableVersion`, `Signature`, `TensorSpec`) and its warm-up
- `codec`: JSON <-> tensors, TF Serving's row (`instances`) and columnar (`inputs`) formats, the
  REST rendering of the status and metadata protos
- `rest`: the REST API (`RestApi`, a WSGI app) and the waitress server that runs it
- `grpc_services`: `PredictionService` and `ModelService`
- `server`: `ModelServer`, both servers and the poller over one `ModelManager`
- `cli`: the command line (`python -m mfn4rec_tf.serve` runs `cli.main`)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any submodule imports TensorFlow

from mfn4rec_tf.serve._common import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SIGNATURE,
    LOG,
    SERVE_TAG,
    SIGNATURE_DEF_FIELD,
    Limits,
    ServingError,
)
from mfn4rec_tf.serve.batching import Batcher, BatchingOptions
from mfn4rec_tf.serve.cli import build_parser, main
from mfn4rec_tf.serve.codec import (
    array_to_json,
    columns_response,
    inputs_to_arrays,
    instances_to_arrays,
    json_to_array,
    metadata_json,
    rows_response,
    status_json,
)
from mfn4rec_tf.serve.grpc_services import ModelService, PredictionService
from mfn4rec_tf.serve.rest import RestApi
from mfn4rec_tf.serve.server import ModelServer
from mfn4rec_tf.serve.versions import (
    ModelManager,
    ServableVersion,
    Signature,
    TensorSpec,
    load_version,
    read_meta_graph,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "LOG",
    "Batcher",
    "BatchingOptions",
    "SERVE_TAG",
    "SIGNATURE_DEF_FIELD",
    "Limits",
    "ModelManager",
    "ModelServer",
    "ModelService",
    "PredictionService",
    "RestApi",
    "ServableVersion",
    "ServingError",
    "Signature",
    "TensorSpec",
    "array_to_json",
    "build_parser",
    "columns_response",
    "inputs_to_arrays",
    "instances_to_arrays",
    "json_to_array",
    "load_version",
    "main",
    "metadata_json",
    "read_meta_graph",
    "rows_response",
    "status_json",
]
