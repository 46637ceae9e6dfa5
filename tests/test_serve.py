"""The model server (`mfn4rec_tf.serve`) over real sockets on loopback: TF Serving's REST and gRPC APIs.

The served SavedModels are built here with tf.Module: a recommender with the signatures of
`mfn4rec_tf.export` (string histories in, top-K item ids, scores and unknown-id counts out), and a
float model with single-output, multi-input, bytes and scalar-output signatures.
"""

import base64
import functools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mfn4rec_tf import serve

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [f"B000{i}" for i in range(1, 9)]
K = 3


class Recommender(tf.Module):
    """The signatures of mfn4rec_tf.export over a toy catalogue; `offset` makes versions answer differently."""

    def __init__(self, offset):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(VOCAB), tf.range(len(VOCAB), dtype=tf.int32)), -1)
        self.vocab = tf.constant(VOCAB)
        self.items = tf.Variable(tf.random.stateless_normal((len(VOCAB), 4), seed=(1, 2)))
        self.bias = tf.Variable(offset * tf.range(len(VOCAB), dtype=tf.float32))

    def _user(self, history):
        index = self.table.lookup(history)  # [B, T], -1 for unknown ids and padding
        known = index >= 0
        unknown = tf.reduce_sum(tf.cast((history != "") & ~known, tf.int32), axis=1)
        rows = tf.gather(self.items, tf.maximum(index, 0)) * tf.cast(known, tf.float32)[..., None]
        count = tf.maximum(tf.reduce_sum(tf.cast(known, tf.float32), axis=1, keepdims=True), 1.0)
        return tf.reduce_sum(rows, axis=1) / count, index, unknown

    def _top(self, history, k, exclude_seen):
        user, index, unknown = self._user(history)
        scores = tf.matmul(user, self.items, transpose_b=True) + self.bias  # [B, N]
        seen = tf.reduce_max(tf.one_hot(index, len(VOCAB)), axis=1) > 0
        scores = tf.where(exclude_seen & seen, tf.fill(tf.shape(scores), -1e9), scores)
        top = tf.math.top_k(scores, k)
        return {"item_ids": tf.gather(self.vocab, top.indices), "scores": top.values, "unknown_ids": unknown}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def serving_default(self, history):
        return self._top(history, K, tf.constant(False))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                  tf.TensorSpec([], tf.int32, name="k"),
                                  tf.TensorSpec([], tf.bool, name="exclude_seen")])
    def recommend(self, history, k, exclude_seen):
        return self._top(history, k, exclude_seen)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def user_representation(self, history):
        user, _, unknown = self._user(history)
        return {"user_representation": user, "unknown_ids": unknown}


class FloatModel(tf.Module):
    """y = x @ [1, 2, -1] + 0.5; `pair`: three inputs, three outputs (one of bytes); `total`: a scalar."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[1.0], [2.0], [-1.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serving_default(self, x):
        return {"y": tf.squeeze(tf.matmul(x, self.w), 1) + 0.5}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int64, name="b"),
                                  tf.TensorSpec([None], tf.string, name="raw_bytes")])
    def pair(self, a, b, raw_bytes):
        return {"sum": tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32), "twice": 2 * b,
                "echo_bytes": tf.strings.join([raw_bytes, "!"])}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def total(self, x):
        return {"total": tf.reduce_sum(x)}


def _save(module, path, names):
    tf.saved_model.save(module, str(path), signatures={name: getattr(module, name) for name in names})
    return path


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """SavedModels to copy into version directories: recommenders with offsets 0, 1, 2 and the float model."""
    root = tmp_path_factory.mktemp("templates")
    names = ("serving_default", "recommend", "user_representation")
    paths = {f"rec{offset}": _save(Recommender(offset), root / f"rec{offset}", names) for offset in (0, 1, 2)}
    paths["float"] = _save(FloatModel(), root / "float", ("serving_default", "pair", "total"))
    return paths


@pytest.fixture(scope="module")
def reference(templates):
    """The signatures of each template, loaded in this process: what the endpoints must answer."""
    return {name: tf.saved_model.load(str(path)).signatures for name, path in templates.items()}


def _version(base, number, template):
    shutil.copytree(template, base / str(number))


def _start(base, name, **kwargs):
    options = dict(rest_port=0, grpc_port=0, poll_wait_seconds=0)
    manager_options = {key: kwargs.pop(key) for key in ("num_versions", "labels", "batching") if key in kwargs}
    options.update(kwargs)
    return serve.ModelServer(serve.ModelManager(name, base, **manager_options), **options).start()


def _rec_server(templates, tmp_path_factory, **options):
    """The recommender with versions 1 (offset 0) and 2 (offset 1) loaded, labels stable=1, canary=2."""
    base = tmp_path_factory.mktemp("rec_base") / "rec"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    _version(base, 2, templates["rec1"])
    return _start(base, "rec", num_versions=2, labels={"stable": 1, "canary": 2}, **options)


@pytest.fixture(scope="module")
def rec(templates, tmp_path_factory):
    server = _rec_server(templates, tmp_path_factory, max_body_bytes=64 * 1024)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rec_batched(templates, tmp_path_factory):
    """`rec` with --enable_batching --max_batch_size 8 --pad_variable_length_inputs."""
    server = _rec_server(templates, tmp_path_factory,
                         batching=serve.BatchingOptions(8, pad_variable_length_inputs=True))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def floats(templates, tmp_path_factory):
    base = tmp_path_factory.mktemp("float_base") / "floats"
    base.mkdir()
    _version(base, 7, templates["float"])
    server = _start(base, "floats")
    yield server
    server.stop()


def http(server, method, path, body=None):
    """(status, JSON body or raw text, headers) of one request to the server's REST port."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers


def predict(server, body, path=""):
    status, payload, _ = http(server, "POST", f"/v1/models/{server.manager.name}{path}:predict", body)
    assert status == 200, payload
    return payload


def expected(reference, template, signature="serving_default", **inputs):
    """The in-process answer of a template's signature, as plain lists (strings decoded)."""
    outputs = reference[template][signature](**{key: tf.constant(value) for key, value in inputs.items()})
    return {key: [[v.decode() for v in row] for row in value.numpy()] if value.dtype == tf.string
            else value.numpy().tolist() for key, value in outputs.items()}


def assert_rec_answer(got, want, rtol=0.0):
    """Same item ids and counts, and scores that are the same float32 numbers (or within `rtol`:
    a row computed in a merged batch may differ in the last bit)."""
    assert got["item_ids"] == want["item_ids"]
    assert got["unknown_ids"] == want["unknown_ids"]
    np.testing.assert_allclose(np.float32(got["scores"]), np.float32(want["scores"]), rtol=rtol, atol=0)


def rows_to_columns(predictions):
    return {key: [row[key] for row in predictions] for key in predictions[0]}


HISTORY = [["B0001", "B0002", ""], ["B0003", "nope", "B0008"]]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Replaces conftest's per-test Keras reset, whose garbage collection costs about a second a test
    with the SavedModels of this module alive; nothing here uses Keras state."""
    yield


# ---------------------------------------------------------------------------------------------------
# REST: status, metadata, predict


def _version_status(version, state="AVAILABLE", error_code="OK", error_message=""):
    return {"version": str(version), "state": state,
            "status": {"error_code": error_code, "error_message": error_message}}


def test_status_is_tf_servings_json_for_all_versions_one_version_and_a_label(rec):
    assert http(rec, "GET", "/v1/models/rec")[:2] == (
        200, {"model_version_status": [_version_status(2), _version_status(1)]})
    assert http(rec, "GET", "/v1/models/rec/versions/1")[1] == {"model_version_status": [_version_status(1)]}
    assert http(rec, "GET", "/v1/models/rec/labels/canary")[1] == {"model_version_status": [_version_status(2)]}
    assert http(rec, "GET", "/v1/models/rec")[2]["Content-Type"] == "application/json"


def test_metadata_renders_every_signature_def_as_tf_serving_does(rec, templates):
    status, metadata, _ = http(rec, "GET", "/v1/models/rec/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "rec", "version": "2", "signature_name": ""}
    saved_model = saved_model_pb2.SavedModel.FromString((templates["rec1"] / "saved_model.pb").read_bytes())
    want = json_format.MessageToDict(saved_model.meta_graphs[0], preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)["signature_def"]
    signature_defs = metadata["metadata"]["signature_def"]["signature_def"]
    assert signature_defs == want
    assert set(signature_defs) == {"serving_default", "recommend", "user_representation", "__saved_model_init_op"}
    history = signature_defs["serving_default"]["inputs"]["history"]
    assert history["dtype"] == "DT_STRING"
    assert history["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}] * 2, "unknown_rank": False}
    assert signature_defs["recommend"]["inputs"]["k"]["dtype"] == "DT_INT32"
    assert signature_defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert http(rec, "GET", "/v1/models/rec/versions/1/metadata")[1]["model_spec"]["version"] == "1"
    assert http(rec, "GET", "/v1/models/rec/labels/stable/metadata")[1]["model_spec"]["version"] == "1"


def test_predict_row_format_one_object_per_row(rec, reference):
    want = expected(reference, "rec1", history=HISTORY)
    predictions = predict(rec, {"instances": HISTORY})["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"item_ids", "scores", "unknown_ids"}
    assert_rec_answer(rows_to_columns(predictions), want)
    assert [row["unknown_ids"] for row in predictions] == [0, 1]  # "nope" is unknown, "" is padding
    # the same rows written as objects keyed by the input name
    named = predict(rec, {"signature_name": "serving_default", "instances": [{"history": h} for h in HISTORY]})
    assert named["predictions"] == predictions


def test_predict_columnar_format_and_the_recommend_signature(rec, reference):
    columns = predict(rec, {"inputs": {"history": HISTORY}})["outputs"]
    assert_rec_answer(columns, expected(reference, "rec1", history=HISTORY))
    assert predict(rec, {"inputs": HISTORY})["outputs"] == columns  # a single input may be given bare

    body = {"signature_name": "recommend", "inputs": {"history": HISTORY, "k": 5, "exclude_seen": True}}
    outputs = predict(rec, body)["outputs"]
    want = expected(reference, "rec1", "recommend", history=HISTORY, k=np.int32(5), exclude_seen=True)
    assert_rec_answer(outputs, want)
    assert all(len(row) == 5 and not set(row) & set(history) for row, history in zip(outputs["item_ids"], HISTORY))

    users = predict(rec, {"signature_name": "user_representation", "inputs": {"history": HISTORY}})["outputs"]
    want = expected(reference, "rec1", "user_representation", history=HISTORY)
    np.testing.assert_array_equal(np.float32(users["user_representation"]), np.float32(want["user_representation"]))


def test_predict_single_output_is_a_plain_list_and_floats_are_shortest(floats):
    x = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2, 0.25, 1]]
    assert predict(floats, {"instances": x}) == {"predictions": [2.5, 0.5, 2.0]}
    assert predict(floats, {"inputs": {"x": x}}) == {"outputs": [2.5, 0.5, 2.0]}
    _, raw, _ = http(floats, "POST", "/v1/models/floats:predict",
                     b'{"signature_name": "total", "inputs": {"x": [[0.1, 0, 0]]}}')
    assert raw == {"outputs": 0.1}  # a scalar output, columnar
    request = urllib.request.Request(f"http://127.0.0.1:{floats.rest_port}/v1/models/floats:predict",
                                     data=b'{"signature_name": "total", "inputs": [[0.1, 0, 0]]}')
    text = urllib.request.urlopen(request, timeout=30).read().decode()
    assert "0.1" in text and "0.100000" not in text  # float32 0.1 written as TF Serving does, not 0.10000000149...


def test_predict_several_inputs_bytes_and_int64(floats):
    rows = [{"a": [0.1, 0.0], "b": 3, "raw_bytes": {"b64": base64.b64encode(b"\x00\xff").decode()}},
            {"a": [1.0, 2.0], "b": -4, "raw_bytes": "text"}]
    predictions = predict(floats, {"signature_name": "pair", "instances": rows})["predictions"]
    assert predictions == [
        {"sum": 3.1, "twice": 6, "echo_bytes": {"b64": base64.b64encode(b"\x00\xff!").decode()}},
        {"sum": -1.0, "twice": -8, "echo_bytes": {"b64": base64.b64encode(b"text!").decode()}},
    ]
    columns = {"a": [[0.1, 0.0], [1.0, 2.0]], "b": [3, -4], "raw_bytes": [{"b64": "AP8="}, "text"]}
    outputs = predict(floats, {"signature_name": "pair", "inputs": columns})["outputs"]
    assert outputs == rows_to_columns(predictions)


def test_versions_and_labels_select_the_model_that_answers(rec, reference):
    for path, template in (("/versions/1", "rec0"), ("/versions/2", "rec1"), ("/labels/stable", "rec0"),
                           ("/labels/canary", "rec1"), ("", "rec1")):
        outputs = predict(rec, {"inputs": {"history": HISTORY}}, path)["outputs"]
        assert_rec_answer(outputs, expected(reference, template, history=HISTORY))
    v1 = predict(rec, {"inputs": {"history": HISTORY}}, "/versions/1")["outputs"]
    v2 = predict(rec, {"inputs": {"history": HISTORY}}, "/versions/2")["outputs"]
    assert v1["scores"] != v2["scores"]  # the versions really differ


# ---------------------------------------------------------------------------------------------------
# REST errors

BAD_REQUESTS = [
    # (server, body, status, part of the error message)
    ("rec", b"{not json", 400, "JSON Parse error"),
    ("rec", b"", 400, "The document is empty"),
    ("rec", b"[1, 2]", 400, "Is not object"),
    ("rec", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    ("rec", {"instances": HISTORY, "inputs": HISTORY}, 400, "only one of 'inputs' or 'instances'"),
    ("rec", {"signature_name": "nope", "instances": HISTORY}, 400, 'Serving signature name: "nope" not found'),
    ("rec", {"signature_name": 3, "instances": HISTORY}, 400, "'signature_name' key must be a string"),
    ("rec", {"inputs": {"hist": HISTORY}}, 400, "Missing named input: history"),
    ("rec", {"inputs": {"history": HISTORY, "extra": 1}}, 400, "Unknown input(s) extra"),
    ("rec", {"instances": [{"histories": ["B0001"]}]}, 400, "must be equal to the inputs"),
    ("rec", {"instances": []}, 400, "No values in 'instances'"),
    ("rec", {"instances": {"history": HISTORY}}, 400, "'instances' to be a list"),
    ("rec", {"instances": [[1, 2]]}, 400, "is not of expected type: string"),
    ("rec", {"inputs": {"history": ["B0001", "B0002"]}}, 400, "must have shape [-1,-1]; got shape [2]"),
    ("rec", {"instances": [["B0001"], ["B0001", "B0002"]]}, 400, "list at unexpected size: 2"),
    ("rec", {"inputs": [["B0001"], "B0002"]}, 400, "found at incorrect level"),
    ("rec", {"inputs": {"history": [[{"b64": "not base64!"}]]}}, 400, "Unable to base64 decode"),
    ("rec", {"signature_name": "recommend", "instances": [{"history": ["B0001"], "k": 2, "exclude_seen": True}]},
     400, "of signature 'recommend' must have shape []; got shape [1]"),
    ("rec", {"signature_name": "recommend", "inputs": {"history": HISTORY, "k": 50, "exclude_seen": True}},
     400, "at least k columns"),  # an error raised while running (top-k over 8 items)
    ("rec", {"signature_name": "recommend", "inputs": {"history": HISTORY, "k": 2.0, "exclude_seen": True}},
     400, "not of expected type: int32"),
    ("rec", {"signature_name": "recommend", "inputs": {"history": HISTORY, "k": 2, "exclude_seen": 1}},
     400, "not of expected type: bool"),
    ("floats", {"instances": [["1", 2, 3]]}, 400, "is not of expected type: float32"),
    ("floats", {"instances": [[True, 2, 3]]}, 400, "is not of expected type: float32"),
    ("floats", {"instances": [[2 ** 25, 2, 3]]}, 400, "without loss of precision"),
    ("floats", {"instances": [[1, 2]]}, 400, "must have shape [-1,3]; got shape [1,2]"),
    ("floats", {"signature_name": "pair", "instances": [[1, 2]]}, 400, "expecting list of objects"),
    ("floats", {"signature_name": "pair", "inputs": [1, 2]}, 400, "expecting an object"),
    ("floats", {"signature_name": "pair", "inputs": {"a": [[1, 2]], "b": [2 ** 63], "raw_bytes": ["x"]}},
     400, "out of the range of int64"),
    ("floats", {"signature_name": "total", "instances": [[1, 2, 3]]}, 400, "Tensor name: total has no shape"),
]


@pytest.mark.parametrize("server_name, body, status, message", BAD_REQUESTS,
                         ids=[f"{i}-{case[3][:30]}" for i, case in enumerate(BAD_REQUESTS)])
def test_bad_predict_requests_are_400_with_a_json_error(request, server_name, body, status, message):
    server = request.getfixturevalue(server_name)
    got_status, payload, headers = http(server, "POST", f"/v1/models/{server.manager.name}:predict", body)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    assert set(payload) == {"error"} and message in payload["error"], payload


NOT_FOUND = [
    ("POST", "/v1/models/nope:predict", "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/nope", "Could not find any versions of model nope"),
    ("GET", "/v1/models/nope/metadata", "Latest(nope)"),
    ("POST", "/v1/models/rec/versions/9:predict", "Specific(rec, 9)"),
    ("GET", "/v1/models/rec/versions/9", "Could not find version 9 of model rec"),
    ("GET", "/v1/models/rec/versions/9/metadata", "Specific(rec, 9)"),
    ("POST", "/v1/models/rec/labels/beta:predict", "Unrecognized servable version label: beta"),
    ("GET", "/v1/models/rec/labels/beta", "Unrecognized servable version label: beta"),
    ("GET", "/v2/models/rec", "Malformed request: GET /v2/models/rec"),
    ("GET", "/v1/models/rec/versions/one", "Malformed request"),
    ("GET", "/v1/models", "Malformed request"),
    ("POST", "/v1/models/rec:classify", "Unknown method :classify"),
]


@pytest.mark.parametrize("method, path, message", NOT_FOUND, ids=[case[1] for case in NOT_FOUND])
def test_unknown_models_versions_labels_and_paths_are_404(rec, method, path, message):
    status, payload, _ = http(rec, method, path, {"instances": HISTORY} if method == "POST" else None)
    assert status == 404
    assert message in payload["error"], payload


@pytest.mark.parametrize("method, path, allow", [("GET", "/v1/models/rec:predict", "POST"),
                                                 ("PUT", "/v1/models/rec:predict", "POST"),
                                                 ("POST", "/v1/models/rec", "GET"),
                                                 ("DELETE", "/v1/models/rec/metadata", "GET")])
def test_wrong_method_is_405(rec, method, path, allow):
    status, payload, headers = http(rec, method, path, b"{}" if method in ("PUT", "POST") else None)
    assert status == 405 and headers["Allow"] == allow
    assert f"{method} is not allowed" in payload["error"]


def test_over_size_body_is_413_and_grpc_resource_exhausted(rec):
    filler = ["B0001"] * (rec.max_body_bytes // 8)  # about 1.1x the 64 KiB limit
    status, payload, _ = http(rec, "POST", "/v1/models/rec:predict", {"instances": [filler]})
    assert status == 413 and "--max_body_bytes" in payload["error"]
    status, _, _ = http(rec, "POST", "/v1/models/rec:predict", b" " * (3 * rec.max_body_bytes))
    assert status == 413  # refused by waitress before it reaches the app
    assert http(rec, "GET", "/v1/models/rec")[0] == 200  # and the server goes on
    assert _grpc_code(lambda: grpc_predict(rec, [filler * 2]))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---------------------------------------------------------------------------------------------------
# Concurrency


@pytest.mark.parametrize("server_name", ["rec", "rec_batched"])
def test_sixteen_concurrent_clients_all_get_their_own_correct_answer(request, server_name, reference):
    rec = request.getfixturevalue(server_name)
    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(16 * 6):
        history = rng.choice(VOCAB + ["nope"], size=(int(rng.integers(1, 4)), int(rng.integers(1, 5)))).tolist()
        version = int(rng.integers(1, 3))
        jobs.append((history, version, bool(rng.integers(2))))
    answers, errors = [None] * len(jobs), []

    def client(indices):
        try:
            for i in indices:
                history, version, rows = jobs[i]
                body = {"instances": history} if rows else {"inputs": {"history": history}}
                payload = predict(rec, body, f"/versions/{version}")
                answers[i] = rows_to_columns(payload["predictions"]) if rows else payload["outputs"]
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(range(t, len(jobs), 16),)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for (history, version, _), answer in zip(jobs, answers):
        assert_rec_answer(answer, expected(reference, f"rec{version - 1}", history=history),
                          rtol=1e-6 if server_name == "rec_batched" else 0.0)


# ---------------------------------------------------------------------------------------------------
# gRPC


@functools.cache
def _channel(port):
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def _stubs(server):
    channel = _channel(server.grpc_port)
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def _spec(message, name, version=None, label=None, signature_name=""):
    message.model_spec.name = name
    if version is not None:
        message.model_spec.version.value = version
    if label is not None:
        message.model_spec.version_label = label
    if signature_name:
        message.model_spec.signature_name = signature_name
    return message


def grpc_predict(server, history, name=None, version=None, label=None, signature_name="", output_filter=(), **extra):
    request = _spec(predict_pb2.PredictRequest(), name or server.manager.name, version, label, signature_name)
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history, dtype=tf.string))
    for key, value in extra.items():
        request.inputs[key].CopyFrom(value if isinstance(value, type(request.inputs["history"]))
                                     else tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return _stubs(server)[0].Predict(request, timeout=30)


def _columns(response):
    outputs = {}
    for key, proto in response.outputs.items():
        value = tf.make_ndarray(proto)
        outputs[key] = [[v.decode() for v in row] for row in value] if value.dtype == object else value.tolist()
    return outputs


def test_grpc_predict_gives_the_rest_answer(rec, reference):
    response = grpc_predict(rec, HISTORY)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("rec", 2, "serving_default")
    rest = predict(rec, {"inputs": {"history": HISTORY}})["outputs"]
    assert_rec_answer(_columns(response), rest)
    assert _columns(response)["scores"] == [[float(np.float32(s)) for s in row] for row in rest["scores"]]

    response = grpc_predict(rec, HISTORY, label="stable", signature_name="recommend", output_filter=["item_ids"],
                            k=tf.make_tensor_proto(4, dtype=tf.int32), exclude_seen=tf.make_tensor_proto(True))
    assert list(response.outputs) == ["item_ids"] and response.model_spec.version.value == 1
    rest = predict(rec, {"signature_name": "recommend", "inputs": {"history": HISTORY, "k": 4, "exclude_seen": True}},
                   "/labels/stable")["outputs"]
    assert _columns(response)["item_ids"] == rest["item_ids"]
    assert _columns(grpc_predict(rec, HISTORY, version=1))["item_ids"] == expected(
        reference, "rec0", history=HISTORY)["item_ids"]


def test_grpc_metadata_and_status_give_the_rest_answers(rec):
    prediction, model = _stubs(rec)
    request = _spec(get_model_metadata_pb2.GetModelMetadataRequest(), "rec", version=1)
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request, timeout=30)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    rest = http(rec, "GET", "/v1/models/rec/versions/1/metadata")[1]
    assert json_format.MessageToDict(signature_defs, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True) == rest["metadata"]["signature_def"]
    assert (response.model_spec.name, response.model_spec.version.value) == ("rec", 1)

    for kwargs, path in (({}, ""), ({"version": 2}, "/versions/2"), ({"label": "stable"}, "/labels/stable")):
        status = model.GetModelStatus(_spec(get_model_status_pb2.GetModelStatusRequest(), "rec", **kwargs), timeout=30)
        assert serve.status_json(status) == http(rec, "GET", f"/v1/models/rec{path}")[1]
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def _grpc_code(call):
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def test_grpc_errors_have_the_right_status_codes(rec):
    prediction, model = _stubs(rec)
    not_found, invalid = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    assert _grpc_code(lambda: grpc_predict(rec, HISTORY, name="nope"))[0] == not_found
    assert _grpc_code(lambda: grpc_predict(rec, HISTORY, version=9))[0] == not_found
    assert _grpc_code(lambda: grpc_predict(rec, HISTORY, label="beta"))[0] == not_found
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, signature_name="nope"))
    assert code == invalid and "nope" in details
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, extra=tf.make_tensor_proto(1)))
    assert code == invalid and "unknown: ['extra']" in details
    code, details = _grpc_code(lambda: grpc_predict(rec, ["B0001"]))
    assert code == invalid and "must have shape [-1,-1]" in details
    float_k = {"k": tf.make_tensor_proto(4.0), "exclude_seen": tf.make_tensor_proto(True)}
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, signature_name="recommend", **float_k))
    assert code == invalid and "expects int32, but float32 is provided" in details
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, output_filter=["nope"]))
    assert code == invalid and "output tensor alias not found" in details

    request = _spec(get_model_metadata_pb2.GetModelMetadataRequest(), "rec")
    assert _grpc_code(lambda: prediction.GetModelMetadata(request, timeout=30))[0] == invalid
    request.metadata_field.append("graph")
    assert _grpc_code(lambda: prediction.GetModelMetadata(request, timeout=30))[0] == invalid
    status_request = _spec(get_model_status_pb2.GetModelStatusRequest(), "nope")
    assert _grpc_code(lambda: model.GetModelStatus(status_request, timeout=30))[0] == not_found


# ---------------------------------------------------------------------------------------------------
# Versions appearing, failing and being fixed while clients keep asking


def _wait_for(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _states(server):
    return {int(entry["version"]): (entry["state"], entry["status"]["error_message"])
            for entry in http(server, "GET", f"/v1/models/{server.manager.name}")[1]["model_version_status"]}


def test_new_version_is_hot_loaded_staging_ignored_and_a_broken_one_never_served(templates, reference, tmp_path,
                                                                                   caplog):
    caplog.set_level(logging.INFO, logger=serve.LOG.name)
    base = tmp_path / "hot"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "hot", poll_wait_seconds=0.05)
    served, errors, stop = [], [], threading.Event()

    def client():  # asks all along: every answer must come from a complete version, none may fail
        while not stop.is_set():
            try:
                response = grpc_predict(server, HISTORY)
                served.append((response.model_spec.version.value, _columns(response)))
            except Exception as error:
                errors.append(error)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert _states(server) == {1: ("AVAILABLE", "")}
        # an exporter's staging directory, a non-integer name and a file are ignored
        shutil.copytree(templates["rec1"], base / ".staging-2-123")
        (base / "latest").mkdir()
        (base / "3").write_text("not a directory")
        time.sleep(0.5)
        assert _states(server) == {1: ("AVAILABLE", "")}
        # the staging directory renamed to its version is loaded, then version 1 is unloaded
        os.rename(base / ".staging-2-123", base / "2")
        _wait_for(lambda: _states(server) == {2: ("AVAILABLE", ""), 1: ("END", "")}, "version 2 to replace 1")
        assert_rec_answer(predict(server, {"inputs": {"history": HISTORY}})["outputs"],
                          expected(reference, "rec1", history=HISTORY))
        assert http(server, "POST", "/v1/models/hot/versions/1:predict", {"instances": HISTORY})[0] == 404
        # a broken version 5 is reported and version 2 keeps serving
        # (written under a staging name and renamed, as an exporter does: a poll between the mkdir and the
        # write would see an empty directory fail, then the written one fail again, as two changes)
        (base / ".staging-5-1").mkdir()
        (base / ".staging-5-1" / "saved_model.pb").write_bytes(b"not a SavedModel")
        os.rename(base / ".staging-5-1", base / "5")
        _wait_for(lambda: _states(server).get(5, ("",))[0] == "END", "version 5 to fail")
        states = _states(server)
        assert states[5][0] == "END" and "Failed to load version 5 of model hot" in states[5][1]
        assert states[2] == ("AVAILABLE", "")
        status = http(server, "GET", "/v1/models/hot/versions/5")[1]["model_version_status"][0]["status"]
        assert status["error_code"] == "UNKNOWN"
        time.sleep(0.3)  # several polls: the failed, unchanged directory is not loaded again and again
        failures = [r for r in caplog.records if r.getMessage().startswith("Failed to load version 5 of model hot")]
        assert len(failures) == 1 and "still serving version(s) [2]" in failures[0].getMessage()
        assert http(server, "GET", "/v1/models/hot/metadata")[1]["model_spec"]["version"] == "2"
        # once fixed (its directory changed), version 5 is loaded
        shutil.rmtree(base / "5")
        shutil.copytree(templates["rec2"], base / ".staging-5-9")
        os.rename(base / ".staging-5-9", base / "5")
        _wait_for(lambda: _states(server).get(5) == ("AVAILABLE", ""), "the fixed version 5")
        _wait_for(lambda: served and served[-1][0] == 5, "an answer from version 5")
    finally:
        stop.set()
        thread.join()
        server.stop()
    assert not errors
    for version, answer in served:
        assert_rec_answer(answer, expected(reference, {1: "rec0", 2: "rec1", 5: "rec2"}[version], history=HISTORY))
    assert {version for version, _ in served} == {1, 2, 5}
    messages = [record.getMessage() for record in caplog.records]
    for event in ("Loaded", "Unloaded"):  # one log line per version loaded and unloaded (the last at stop)
        assert [m.split()[2] for m in messages if m.startswith(f"{event} version ")] == ["1", "2", "5"], event


def test_stop_finishes_the_requests_under_way_and_refuses_new_ones(templates, reference, tmp_path):
    base = tmp_path / "drain"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "drain")
    servable = server.manager.servable("drain")
    signature = servable.signatures["serving_default"]
    under_way = threading.Semaphore(0)

    def slow(**inputs):
        under_way.release()
        time.sleep(0.5)
        return signature.function(**inputs)

    servable.signatures["serving_default"] = serve.Signature(signature.name, signature.inputs, signature.outputs, slow)
    answers = {}
    clients = [threading.Thread(target=lambda: answers.update(rest=http(server, "POST", "/v1/models/drain:predict",
                                                                        {"inputs": {"history": HISTORY}}))),
               threading.Thread(target=lambda: answers.update(grpc=_columns(grpc_predict(server, HISTORY))))]
    for client in clients:
        client.start()
    for _ in clients:
        assert under_way.acquire(timeout=30)
    server.stop()  # while both requests are inside the model
    for client in clients:
        client.join()
    want = expected(reference, "rec0", history=HISTORY)
    assert answers["rest"][0] == 200
    assert_rec_answer(answers["rest"][1]["outputs"], want)
    assert_rec_answer(answers["grpc"], want)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/drain", timeout=5)
    assert _grpc_code(lambda: grpc_predict(server, HISTORY))[0] == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_exported_run_rest_grpc_and_the_keras_model_agree(tmp_path):
    """A real tiny run, exported by mfn4rec_tf.export and served: REST, gRPC and Keras give one top-K."""
    import keras

    from mfn4rec_tf import export, fit
    from mfn4rec_tf.data import FeatureGatherer, pad
    from mfn4rec_tf.dataset import write_dataset
    from mfn4rec_tf.demo import DemoSpec, generate
    from mfn4rec_tf.metrics import top_k_items
    from mfn4rec_tf.model import with_output_mode
    from mfn4rec_tf.run_config import load_config
    from mfn4rec_tf.training import open_data

    keras.utils.set_random_seed(0)
    items, interactions, features, _ = generate(DemoSpec(num_users=200, num_items=120, max_length=12))
    data = write_dataset(tmp_path / "data", name="tiny", items=items, interactions=interactions, features=features)
    run = tmp_path / "run"
    assert fit.main(["--data", str(data), "--out", str(run), "--epochs", "1", "--patience", "1", "--quiet",
                     "--protocol", "leave-one-out", "--max-length", "6", "--set", "model.memory_dim=8",
                     "--set", "model.fc_hidden_units=8", "--set", "model.modality_hidden_units=6",
                     "--set", "model.id_hidden_units=6"]) == 0
    version = export.export_run(run, "tiny", base=tmp_path / "saved_models", k=10)
    assert version == tmp_path / "saved_models" / "tiny" / "1"

    config = load_config(run / "config.yaml")
    dataset = open_data(config)
    ids = dataset.item_ids()
    index = {item: i for i, item in enumerate(ids) if i}
    by_user = dataset.interactions.groupby("user_id", sort=True)["item_index"]
    sequences = [list(ids[group.to_numpy()]) for _, group in by_user]
    rows = [sequences[0][:3], sequences[1][:8] + ["not-an-item"], sequences[2][:1], sequences[3][:5]]
    width = max(len(row) for row in rows)
    histories = [[str(item) for item in row] + [""] * (width - len(row)) for row in rows]

    model = with_output_mode(keras.saving.load_model(run / "model.keras"), "last")
    gather = FeatureGatherer(dataset, config.modality_names(dataset))
    known = [[index[item] for item in row if item in index][-6:] for row in histories]
    logits = np.array(model(gather(pad(known)))["logits"])
    top = top_k_items(logits, 10)
    want = {"item_ids": ids[top].astype(str).tolist(), "scores": np.take_along_axis(logits, top, axis=1).tolist(),
            "unknown_ids": [0, 1, 0, 0]}

    server = _start(version.parent, "tiny")
    try:
        rest = rows_to_columns(predict(server, {"instances": histories})["predictions"])
        response = grpc_predict(server, histories)
    finally:
        server.stop()
    served = _columns(response)
    assert rest["item_ids"] == served["item_ids"] == want["item_ids"]
    assert rest["unknown_ids"] == served["unknown_ids"] == want["unknown_ids"]
    np.testing.assert_array_equal(np.float32(rest["scores"]), np.float32(served["scores"]))
    np.testing.assert_allclose(served["scores"], want["scores"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# The command


def _serve_process(base, name, *extra):
    """`python -X importtime -m mfn4rec_tf.serve ...` on free ports; returns (process, rest port, grpc port, log)."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "mfn4rec_tf.serve", "--model_base_path", str(base),
         "--model_name", name, "--rest_api_port", "0", "--port", "0", *extra],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        log.append(line)
        match = re.search(r"REST at http://127\.0\.0\.1:(\d+)/v1/models/\S+, gRPC at 127\.0\.0\.1:(\d+)", line)
        if match:
            return process, int(match[1]), int(match[2]), log
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(log[-30:]))


class _Ports:
    """What `predict` and `grpc_predict` need of a server, for one running in a subprocess."""

    def __init__(self, name, rest_port, grpc_port):
        self.manager = type("M", (), {"name": name})()
        self.rest_port, self.grpc_port = rest_port, grpc_port


def test_command_serves_and_stops_cleanly_on_sigterm_without_model_code(templates, tmp_path):
    signum = signal.SIGTERM
    base = tmp_path / "cli"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    process, rest_port, grpc_port, log = _serve_process(base, "cli", "--version_label", "stable=1",
                                                        "--tensorflow_inter_op_parallelism", "-1",
                                                        "--tensorflow_intra_op_parallelism", "1")
    try:
        ports = _Ports("cli", rest_port, grpc_port)
        rest = predict(ports, {"inputs": {"history": HISTORY}}, "/labels/stable")["outputs"]
        assert_rec_answer(_columns(grpc_predict(ports, HISTORY)), rest)
        process.send_signal(signum)
        _, rest_of_log = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    log = "".join(log) + rest_of_log
    assert process.returncode == 0, log[-3000:]
    assert f"Received {signal.Signals(signum).name}: stopping" in log
    assert "Loaded version 1 of model cli" in log and "Unloaded version 1 of model cli" in log
    assert "TensorFlow threads: intra-op 1, inter-op -1" in log  # ops in the request's own thread: same answers
    assert "Stopped serving model cli" in log and "Traceback" not in log
    imported = set(re.findall(r"^import time:.*\|\s+(\S+)\s*$", log, flags=re.MULTILINE))
    assert {"mfn4rec_tf", "tensorflow_serving.apis.predict_pb2", "waitress"} <= imported  # the parse works
    assert not {name for name in imported
                if name.startswith(("tensorflow_text", "mfn4rec_tf.model", "mfn4rec_tf.layers", "mfn4rec_tf.training",
                                    "mfn4rec_tf.baselines"))}


def test_main_stops_on_sigint_and_returns_0(templates, tmp_path, caplog):
    base = tmp_path / "sigint"
    base.mkdir()
    _version(base, 3, templates["rec1"])
    answers = []

    def client_then_sigint(rest_port, grpc_port):
        try:
            ports = _Ports("sigint", rest_port, grpc_port)
            answers.append(predict(ports, {"instances": HISTORY}))
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # main() has its own handler installed by now

    class StartupLine(logging.Handler):
        def emit(self, record):
            match = re.search(r"REST at http://127\.0\.0\.1:(\d+)/.*gRPC at 127\.0\.0\.1:(\d+)", record.getMessage())
            if match:
                threading.Thread(target=client_then_sigint, args=(int(match[1]), int(match[2]))).start()

    caplog.set_level(logging.INFO, logger=serve.LOG.name)
    handler = StartupLine()
    serve.LOG.addHandler(handler)
    try:
        assert serve.main(["--model_base_path", str(base), "--rest_api_port", "0", "--port", "0"]) == 0
    finally:
        serve.LOG.removeHandler(handler)
    assert len(answers) == 1 and len(answers[0]["predictions"]) == 2
    messages = [record.getMessage() for record in caplog.records]
    assert "Received SIGINT: stopping" in messages
    assert messages[-2:] == ["Unloaded version 3 of model sigint", "Stopped serving model sigint"]


def test_command_line_errors_exit_2(tmp_path, capsys, rec):
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--model_base_path", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "error: --model_base_path" in capsys.readouterr().err
    for bad in (["--version_label", "stable"], ["--version_label", "a=b"], ["--port", "70000"],
                ["--num_versions", "0"], ["--file_system_poll_wait_seconds", "-1"], ["--model_name", "a/b"],
                ["--tensorflow_intra_op_parallelism", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            serve.main(["--model_base_path", str(tmp_path), *bad])
        assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err, bad
    # thread flags once TensorFlow has run in this process (the rec fixture's model has): refused, not a traceback
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--model_base_path", str(tmp_path), "--tensorflow_inter_op_parallelism", "3"])
    assert exit_info.value.code == 2 and "cannot be modified after initialization" in capsys.readouterr().err
    # a port already taken (by the rec fixture's server)
    assert serve.main(["--model_base_path", str(tmp_path), "--rest_api_port", "0", "--port", str(rec.grpc_port)]) == 2
    assert "error: cannot bind the gRPC port" in capsys.readouterr().err
    assert serve.main(["--model_base_path", str(tmp_path), "--rest_api_port", str(rec.rest_port), "--port", "0"]) == 2
    assert "error: cannot bind the REST port" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back


# ---------------------------------------------------------------------------------------------------
# The README's client snippets, run against a server of the README's model name


def _readme_snippets():
    section = (ROOT / "README.md").read_text().split("<!-- serving:start -->")[1].split("<!-- serving:end -->")[0]
    return dict(re.findall(r"<!-- serving-client: (\S+) -->\n```\w+\n(.*?)```", section, re.DOTALL))


@pytest.fixture()
def readme_server(templates, tmp_path):
    base = tmp_path / "saved_models" / "mfn4rec"
    base.mkdir(parents=True)
    _version(base, 1, templates["rec0"])
    server = _start(base, "mfn4rec")
    yield server
    server.stop()


def _local(code, server):
    return code.replace("localhost:8501", f"127.0.0.1:{server.rest_port}").replace(
        "localhost:8500", f"127.0.0.1:{server.grpc_port}")


def test_readme_client_snippets_run_against_the_server(readme_server, reference):
    snippets = _readme_snippets()
    assert set(snippets) == {"curl", "python-rest", "python-grpc"}
    row_history = [["B0001", "B0002", "B0003"], ["B0004", "", ""]]
    recommend = expected(reference, "rec0", "recommend", history=[["B0001", "B0002", "B0003"]], k=np.int32(5),
                         exclude_seen=True)

    rest = {}
    exec(compile(_local(snippets["python-rest"], readme_server), "README.md (python-rest)", "exec"), rest)
    assert_rec_answer(rows_to_columns(rest["predictions"]), expected(reference, "rec0", history=row_history))

    grpc_namespace = {}
    exec(compile(_local(snippets["python-grpc"], readme_server), "README.md (python-grpc)", "exec"), grpc_namespace)
    assert [[v.decode() for v in row] for row in grpc_namespace["item_ids"]] == recommend["item_ids"]
    np.testing.assert_array_equal(grpc_namespace["scores"], np.float32(recommend["scores"]))

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the Python snippets ran, the curl ones did not")
    answers = []
    for line in _local(snippets["curl"], readme_server).strip().splitlines():
        assert line.startswith("curl "), line
        result = subprocess.run(shlex.split(line), check=False, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        answers.append(json.loads(result.stdout))
    assert len(answers) == 4
    assert answers[0] == {"model_version_status": [_version_status(1)]}
    assert answers[1]["model_spec"]["name"] == "mfn4rec"
    assert_rec_answer(rows_to_columns(answers[2]["predictions"]), expected(reference, "rec0", history=row_history))
    assert_rec_answer(answers[3]["outputs"], recommend)


# ---------------------------------------------------------------------------------------------------
# Hardening: what a client (or a file copy) can do to the server


def _tensor(dtype, dims, **values):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in dims]))
    for field, value in values.items():
        if field == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, field).extend(value)
    return proto


def test_grpc_tensor_claiming_a_huge_shape_is_refused_before_it_is_expanded(rec, monkeypatch):
    expanded = []
    make_ndarray = tf.make_ndarray

    def watched(proto, *args, **kwargs):
        size = int(np.prod([dim.size for dim in proto.tensor_shape.dim]))
        expanded.append(size)
        assert size <= 10 ** 6, f"make_ndarray called on a TensorProto claiming {size} elements"
        return make_ndarray(proto, *args, **kwargs)

    monkeypatch.setattr(tf, "make_ndarray", watched)
    string = tf.string.as_datatype_enum
    huge = _tensor(string, [10 ** 8, 1], string_val=[b"B0001" * 12])  # 60 bytes claiming 10^8 rows
    code, details = _grpc_code(lambda: grpc_predict(rec, huge))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_rows" in details, details
    wide = _tensor(string, [1, 10 ** 8], string_val=[b"B0001"])
    code, details = _grpc_code(lambda: grpc_predict(rec, wide))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_elements" in details, details
    for proto, message in ((_tensor(string, [2, 2], string_val=[b"a"] * 5), "5 values for shape [2,2]"),
                           (_tensor(string, [2, -3], string_val=[b"a"]), "negative"),
                           (_tensor(string, [0, 2], string_val=[b"a"]), "1 values for shape [0,2]")):
        code, details = _grpc_code(lambda proto=proto: grpc_predict(rec, proto))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, (message, details)
    k = _tensor(tf.int32.as_datatype_enum, [], tensor_content=b"\x01\x00")  # 2 bytes for an int32
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, signature_name="recommend", k=k,
                                                    exclude_seen=tf.make_tensor_proto(True)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor_content" in details, details
    # an input the signature does not take is refused before it is read, however large it claims to be
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, extra=_tensor(string, [10 ** 9], string_val=[b"x"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown: ['extra']" in details
    assert not [size for size in expanded if size > 10 ** 6]
    # one value filling a small shape (what tf.make_tensor_proto writes for a scalar) is still accepted
    filled = _tensor(string, [2, 3], string_val=[b"B0001"])
    assert len(_columns(grpc_predict(rec, filled))["item_ids"]) == 2


@pytest.fixture(scope="module")
def limited(templates, tmp_path_factory):
    """The recommender with small per-request limits: 4 rows, rows x k <= 10, 12 elements an input."""
    base = tmp_path_factory.mktemp("limited_base") / "limited"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "limited", max_rows=4, max_rows_times_k=10, max_elements=12)
    yield server
    server.stop()


def test_per_request_limits_are_413_naming_the_flag_and_grpc_resource_exhausted(limited):
    def recommend(rows, k, width=1):
        return {"signature_name": "recommend",
                "inputs": {"history": [["B0001"] * width] * rows, "k": k, "exclude_seen": False}}

    assert len(predict(limited, recommend(4, 2))["outputs"]["item_ids"]) == 4  # 8 <= 10
    for body, flag in ((recommend(5, 1), "--max_rows"), ({"instances": [["B0001"]] * 5}, "--max_rows"),
                       (recommend(4, 3), "--max_rows_times_k"), (recommend(2, 1, width=7), "--max_elements")):
        status, payload, _ = http(limited, "POST", "/v1/models/limited:predict", body)
        assert status == 413 and flag in payload["error"], (flag, payload)
    code, details = _grpc_code(lambda: grpc_predict(limited, [["B0001"]] * 5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_rows" in details
    code, details = _grpc_code(lambda: grpc_predict(limited, [["B0001"]] * 4, signature_name="recommend",
                                                    k=tf.make_tensor_proto(3, dtype=tf.int32),
                                                    exclude_seen=tf.make_tensor_proto(False)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_rows_times_k" in details
    # the defaults are documented ones
    args = serve.build_parser().parse_args(["--model_base_path", "x"])
    assert (args.max_rows, args.max_rows_times_k, args.max_elements) == (1024, 100_000, 1_000_000)
    assert serve.build_parser().parse_args(["--model_base_path", "x", "--max-rows", "7"]).max_rows == 7


def _open(server, count, partial=False):
    import socket

    sockets = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", server.rest_port), timeout=5)
        if partial:  # a request whose body never comes
            connection.sendall(b"POST /v1/models/busy:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        sockets.append(connection)
    return sockets


def _served_within(server, seconds):
    start = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/busy")
    with urllib.request.urlopen(request, timeout=seconds) as response:
        assert response.status == 200
    return time.monotonic() - start


def test_idle_and_slow_connections_do_not_lock_new_clients_out(templates, tmp_path):
    base = tmp_path / "busy"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "busy")  # the defaults
    sockets = []
    try:
        sockets += _open(server, 110)  # more idle keep-alive connections than waitress's default limit
        sockets += _open(server, 20, partial=True)
        assert _served_within(server, 10) < 5
    finally:
        for connection in sockets:
            connection.close()
        server.stop()
    # with a small limit, a new client evicts the idle and then the slowest partial requests
    server = _start(base, "busy", rest_connection_limit=8, rest_request_timeout=2, rest_idle_timeout=60,
                    rest_cleanup_interval=1)
    sockets = []
    try:
        sockets += _open(server, 12, partial=True)
        sockets += _open(server, 12)
        assert _served_within(server, 10) < 5
        # a request that does not arrive within --rest_request_timeout is closed
        slow = _open(server, 1, partial=True)[0]
        sockets.append(slow)
        start = time.monotonic()
        slow.settimeout(10)
        try:
            while time.monotonic() - start < 10 and slow.recv(1024):
                pass
        except OSError:
            pass
        assert time.monotonic() - start < 6
    finally:
        for connection in sockets:
            connection.close()
        server.stop()


def test_a_failed_version_is_retried_when_its_folder_changes_and_with_back_off(templates, tmp_path):
    base = tmp_path / "retry"
    base.mkdir()
    manager = serve.ModelManager("retry", base)
    shutil.copytree(templates["rec2"], base / "5")
    data = next((base / "5" / "variables").glob("variables.data-*"))
    complete = data.read_bytes()
    data.write_bytes(b"")  # a copy under way: the data file is not there yet
    manager.poll()
    status = manager.status("retry").model_version_status[0]
    assert status.state == get_model_status_pb2.ModelVersionStatus.END
    assert "Failed to load" in status.status.error_message
    data.write_bytes(complete)  # the copy completes (only the data file changes)
    manager.poll()
    assert manager.loaded_versions == [5]

    # a re-copy with the same sizes and mtimes (a broken copy, then a good one, `cp -p` style)
    shutil.copytree(templates["rec1"], base / "6")
    data = next((base / "6" / "variables").glob("variables.data-*"))
    good, stat = data.read_bytes(), data.stat()
    data.write_bytes(bytes(len(good)))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    manager.poll()
    assert manager.loaded_versions == [5]
    end = get_model_status_pb2.ModelVersionStatus.END
    assert manager.status("retry", version=6).model_version_status[0].state == end
    data.write_bytes(good)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    manager.poll()
    assert manager.loaded_versions == [6]

    # with nothing changed, a failed version is tried again with back-off; status shows the latest error
    attempts = []

    def failing(path, version):
        attempts.append(time.monotonic())
        raise ValueError(f"attempt {len(attempts)}")

    (tmp_path / "flaky" / "1").mkdir(parents=True)
    flaky = serve.ModelManager("flaky", tmp_path / "flaky", loader=failing, retry_seconds=(0.2, 0.4))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        flaky.poll()
        time.sleep(0.02)
    assert 3 <= len(attempts) <= 6, attempts
    gaps = np.diff(attempts)
    assert gaps[0] >= 0.2 and all(gap >= 0.39 for gap in gaps[1:]), gaps
    message = flaky.status("flaky").model_version_status[0].status.error_message
    assert message.endswith(f"attempt {len(attempts)}"), message


def test_a_version_folder_over_int64_is_ignored_and_does_not_poison_the_server(templates, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=serve.LOG.name)
    base = tmp_path / "big"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "big", poll_wait_seconds=0.05)
    huge = str(2 ** 63)
    try:
        _version(base, huge, templates["rec1"])
        time.sleep(0.5)
        assert http(server, "GET", "/v1/models/big")[:2] == (200, {"model_version_status": [_version_status(1)]})
        assert grpc_predict(server, HISTORY).model_spec.version.value == 1
        status = _stubs(server)[1].GetModelStatus(_spec(get_model_status_pb2.GetModelStatusRequest(), "big"),
                                                  timeout=30)
        assert [entry.version for entry in status.model_version_status] == [1]
        shutil.rmtree(base / huge)
        time.sleep(0.2)
        assert http(server, "GET", "/v1/models/big")[0] == 200
    finally:
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if huge in r.getMessage()]
    assert len(warnings) == 1 and "ignored" in warnings[0], warnings


def _deep(depth):
    value = "B0001"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("body, message", [
    ({"inputs": {"history": _deep(70)}}, "must have shape [-1,-1]; got a value of rank 70"),
    ({"instances": [_deep(69)]}, "must have shape [-1,-1]; got a value of rank 70"),
    (b'{"instances": [["\\ud800"]]}', "not valid Unicode"),
    (b'{"inputs": {"history": [["B0001"]]}, "signature_name": "\\udfff"}', "not found"),
])
def test_hostile_json_is_400_without_exception_text(rec, body, message):
    status, payload, _ = http(rec, "POST", "/v1/models/rec:predict", body)
    assert status == 400 and message in payload["error"], payload
    assert not re.search(r"\w+(Error|Exception)\b|Traceback", payload["error"]), payload


def test_a_huge_version_number_in_the_url_is_404_and_grpc_bad_dtype_is_invalid(rec):
    digits = "9" * 5000
    for method, path in (("GET", f"/v1/models/rec/versions/{digits}"),
                         ("GET", f"/v1/models/rec/versions/{digits}/metadata"),
                         ("POST", f"/v1/models/rec/versions/{digits}:predict"),
                         ("GET", f"/v1/models/rec/versions/{2 ** 64}")):
        status, payload, _ = http(rec, method, path, {"instances": HISTORY} if method == "POST" else None)
        assert status == 404 and "version" in payload["error"] and len(payload["error"]) < 300, payload
    code, details = _grpc_code(lambda: grpc_predict(rec, _tensor(9999, [1, 1], string_val=[b"x"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expects string" in details and "9999" in details, details


def test_internal_error_is_500_and_grpc_internal_without_the_exception_text(rec, monkeypatch):
    servable = rec.manager.servable("rec")
    signature = servable.signatures["user_representation"]

    def broken(**_):
        raise RuntimeError("secret /path/to/thing")

    monkeypatch.setitem(servable.signatures, "user_representation", serve.Signature(
        signature.name, signature.inputs, signature.outputs, broken))
    status, payload, _ = http(rec, "POST", "/v1/models/rec:predict",
                              {"signature_name": "user_representation", "instances": HISTORY})
    assert status == 500 and "secret" not in payload["error"] and payload["error"].startswith("Internal error")
    code, details = _grpc_code(lambda: grpc_predict(rec, HISTORY, signature_name="user_representation"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details


def test_a_non_loopback_host_logs_that_there_is_no_tls_and_no_authentication(caplog):
    from mfn4rec_tf.serve import server as server_module

    caplog.set_level(logging.WARNING, logger=serve.LOG.name)
    for address in ("127.0.0.1", "::1", "127.0.0.2"):
        assert not server_module._warn_if_exposed(address)
    assert not caplog.records
    for address in ("0.0.0.0", "::", "192.168.1.20"):
        assert server_module._warn_if_exposed(address)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert all("no TLS" in m and "no authentication" in m and "reverse proxy" in m for m in messages)


def _call(api, body):
    """(status, JSON) of one POST :predict straight through the WSGI app."""
    import io

    answer = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/models/rec:predict", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    payload = b"".join(api(environ, lambda status, headers: answer.update(status=status, headers=dict(headers))))
    return int(answer["status"].split()[0]), json.loads(payload), answer["headers"]


def test_request_bodies_handled_at_once_are_bounded_and_the_rest_wait_then_503(rec):
    body = json.dumps({"instances": HISTORY}).encode()
    api = serve.RestApi(rec.manager, max_body_bytes=4096, max_inflight_body_bytes=2 * len(body) - 1,
                        busy_wait_seconds=0.3)
    assert _call(api, body)[0] == 200
    assert api.inflight.acquire(len(body), timeout=1)  # a request of the same size under way
    try:
        start = time.monotonic()
        status, payload, headers = _call(api, body)
        assert status == 503 and "--max_inflight_body_bytes" in payload["error"] and headers["Retry-After"]
        assert 0.3 <= time.monotonic() - start < 5
        small = json.dumps({"instances": HISTORY[:1]}).encode()
        assert len(body) + len(small) <= 2 * len(body) - 1 and _call(api, small)[0] == 200  # what fits goes on
    finally:
        api.inflight.release(len(body))
    assert _call(api, body)[0] == 200
    assert serve.build_parser().parse_args(["--model_base_path", "x"]).max_inflight_body_bytes is None  # 2x body


def test_grpc_messages_share_the_inflight_budget_and_a_broken_message_is_invalid(templates, tmp_path):
    base = tmp_path / "budget"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    server = _start(base, "budget", max_inflight_body_bytes=1000, busy_wait_seconds=0.3)
    try:
        assert len(_columns(grpc_predict(server, HISTORY))["item_ids"]) == 2
        assert server.inflight.acquire(1000, timeout=1)  # a large request under way, REST or gRPC
        try:
            code, details = _grpc_code(lambda: grpc_predict(server, HISTORY))
            assert code == grpc.StatusCode.UNAVAILABLE and "--max_inflight_body_bytes" in details, details
            status, payload, _ = http(server, "POST", "/v1/models/budget:predict", {"instances": HISTORY})
            assert status == 503 and "--max_inflight_body_bytes" in payload["error"]
        finally:
            server.inflight.release(1000)
        assert len(_columns(grpc_predict(server, HISTORY))["item_ids"]) == 2
        # bytes that are not a PredictRequest
        call = _channel(server.grpc_port).unary_unary("/tensorflow.serving.PredictionService/Predict")
        code, details = _grpc_code(lambda: call(b"\xff\xff\xff", timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "PredictRequest" in details, details
    finally:
        server.stop()


def _warmup_file(version_dir, records):
    """Writes TF Serving's warm-up file into `version_dir` from (kind, signature, history) tuples."""
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

    path = version_dir / serve.versions.WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for kind, signature, history in records:
            if kind == "predict":
                request = predict_pb2.PredictRequest()
                request.model_spec.signature_name = signature
                request.inputs["history"].CopyFrom(tf.make_tensor_proto(history, tf.string))
                entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(entry.SerializeToString())
            elif kind == "classify":
                entry = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
                    request=classification_pb2.ClassificationRequest()))
                writer.write(entry.SerializeToString())
            else:
                writer.write(b"\x08\xff\xff not a PredictionLog")
    return path


def test_warm_up_replays_predict_records_and_skips_other_kinds(templates, tmp_path, caplog, monkeypatch):
    base = tmp_path / "warm"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    _warmup_file(base / "1", [("predict", "", [["B0001", "B0002"]]), ("predict", "user_representation", [["B0003"]]),
                              ("classify", "", None)])
    calls = []
    original = serve.versions.Signature.run
    monkeypatch.setattr(serve.versions.Signature, "run",
                        lambda self, arrays, limits=None: calls.append(self.name) or original(self, arrays, limits))
    with caplog.at_level(logging.INFO):
        loaded = serve.versions.load_version(base / "1", 1)
    assert loaded.version == 1
    assert calls == ["serving_default", "user_representation"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("Skipped 1 warm-up record(s)" in m for m in messages)


@pytest.mark.parametrize("records, message", [
    ([("predict", "", [["B0001"]]), ("predict", "recommend", [["B0001"]])], "recommend"),
    ([("predict", "no_such_signature", [["B0001"]])], "asks for signature 'no_such_signature'"),
    ([("garbage", "", None)], "is not a PredictionLog"),
])
def test_a_failing_warm_up_fails_the_load_and_the_old_version_keeps_serving(templates, tmp_path, records, message):
    base = tmp_path / "warm"
    base.mkdir()
    _version(base, 1, templates["rec0"])
    manager = serve.ModelManager("warm", base)
    manager.poll()
    _version(base, 2, templates["rec1"])
    _warmup_file(base / "2", records)  # the first record of the first case is fine, its second lacks k
    manager.poll()
    states = {v.version: (v.state, v.status.error_message) for v in manager.status("warm").model_version_status}
    assert states[2][0] == get_model_status_pb2.ModelVersionStatus.END and message in states[2][1]
    assert manager.servable("warm").version == 1


# ---------------------------------------------------------------------------------------------------
# Batching


class _SlowSignature:
    """A stand-in for `Signature`: `call` doubles `x` row-wise and returns `k` per row; the first
    call blocks until `gate` is set, so later requests queue behind it deterministically."""

    name = "slow"
    inputs = {"x": serve.TensorSpec(tf.int64, (None, None)), "k": serve.TensorSpec(tf.int32, ())}

    def __init__(self, fail_on=None, row_wise=True):
        self.gate = threading.Event()
        self.calls = []
        self.fail_on, self.row_wise = fail_on, row_wise

    def call(self, arrays):
        self.calls.append(arrays["x"].shape)
        if len(self.calls) == 1:
            assert self.gate.wait(10)
        x = arrays["x"]
        if self.fail_on is not None and (x == self.fail_on).any():
            raise serve.ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{self.fail_on} in x")
        if not self.row_wise:
            return {"total": np.float32(x.sum())}
        return {"y": x * 2, "k": np.full(len(x), arrays["k"])}


def _batched_calls(signature, requests, options):
    """Runs the first request (which blocks in its call), queues the others behind it, then opens
    the gate; returns each request's result or error."""
    batcher = serve.Batcher(options)
    results = [None] * len(requests)

    def worker(index):
        try:
            results[index] = batcher.run(signature, requests[index])
        except serve.ServingError as error:
            results[index] = error

    threads = [threading.Thread(target=worker, args=(0,))]
    threads[0].start()
    _wait_for(lambda: len(signature.calls) == 1, "the first call")
    for index in range(1, len(requests)):
        threads.append(threading.Thread(target=worker, args=(index,)))
        threads[-1].start()
    # each other request is queued behind the blocked call, or (another merge key) has run already
    _wait_for(lambda: sum(len(q) for q in batcher._queues.values()) + sum(r is not None for r in results[1:])
              == len(requests) - 1, "the queue")
    signature.gate.set()
    for thread in threads:
        thread.join(10)
    return batcher, results


def _x(rows, width, start):
    return np.arange(start, start + rows * width, dtype=np.int64).reshape(rows, width)


def test_batcher_merges_requests_that_queue_behind_a_running_call():
    requests = [{"x": _x(1, 3, 0), "k": np.int32(5)}, {"x": _x(2, 3, 10), "k": np.int32(5)},
                {"x": _x(1, 3, 20), "k": np.int32(5)}, {"x": _x(3, 3, 30), "k": np.int32(5)}]
    signature = _SlowSignature()
    batcher, results = _batched_calls(signature, requests, serve.BatchingOptions(max_batch_size=5))
    assert signature.calls == [(1, 3), (3, 3), (3, 3)]  # alone; then 2 + 1 rows; 3 more would pass 5
    assert batcher.merged == 2
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
        np.testing.assert_array_equal(result["k"], [5] * len(request["x"]))


def test_batcher_keeps_apart_other_scalars_and_widths_unless_padding_is_on():
    requests = [{"x": _x(1, 3, 0), "k": np.int32(1)}, {"x": _x(1, 3, 10), "k": np.int32(1)},
                {"x": _x(1, 3, 20), "k": np.int32(2)}, {"x": _x(1, 2, 30), "k": np.int32(1)}]
    signature = _SlowSignature()
    _, results = _batched_calls(signature, requests, serve.BatchingOptions())
    assert sorted(signature.calls[1:]) == [(1, 2), (1, 3), (1, 3)]  # nothing merged
    signature = _SlowSignature()
    _, padded = _batched_calls(signature, requests, serve.BatchingOptions(pad_variable_length_inputs=True))
    assert sorted(signature.calls[1:]) == [(1, 3), (2, 3)]  # k=1 rows merged, the 2-wide one padded with 0
    for request, got, want in zip(requests, padded, results):
        np.testing.assert_array_equal(got["y"][:, :request["x"].shape[1]], want["y"])
    assert (padded[3]["y"][:, 2] == 0).all()


def test_batcher_a_failing_request_fails_alone_and_non_row_outputs_run_alone():
    requests = [{"x": _x(1, 2, 0), "k": np.int32(1)}, {"x": _x(1, 2, 10), "k": np.int32(1)},
                {"x": _x(1, 2, 20), "k": np.int32(1)}]
    signature = _SlowSignature(fail_on=21)
    _, results = _batched_calls(signature, requests, serve.BatchingOptions())
    assert isinstance(results[2], serve.ServingError) and "21 in x" in str(results[2])
    np.testing.assert_array_equal(results[1]["y"], requests[1]["x"] * 2)
    assert signature.calls[1:] == [(2, 2), (1, 2), (1, 2)]  # the merged call failed: each again alone
    signature = _SlowSignature(row_wise=False)
    _, results = _batched_calls(signature, requests, serve.BatchingOptions())
    assert [float(r["total"]) for r in results] == [1.0, 21.0, 41.0]


def test_batcher_strings_are_padded_with_empty_strings():
    merged = serve.Batcher._merge([{"h": np.array([[b"a"]], object)}, {"h": np.array([[b"b", b"c"]], object)}])
    assert merged["h"].tolist() == [[b"a", b""], [b"b", b"c"]]


def test_batching_options_are_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.BatchingOptions(max_batch_size=0)
