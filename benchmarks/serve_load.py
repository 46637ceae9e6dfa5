"""Load test of the model server: latency percentiles and throughput under concurrent clients.

    python benchmarks/serve_load.py --model_base_path saved_models/NAME [--grpc] [--data DIR]
        [--clients 1,8] [--batch-sizes 1,32] [--requests 300] [--length 20] [--server-flag=--enable_batching]
    python benchmarks/serve_load.py --rest localhost:8501 [--grpc --grpc-target localhost:8500]
        --model_name NAME [--model_base_path saved_models/NAME]

Without `--rest` it starts `python -m mfn4rec_tf.serve` on `--model_base_path` (free ports) and
stops it at the end; with `--rest` it drives a running endpoint (ours or TF Serving's). The request
is built from the signature's metadata: each input's dims of unknown size become the batch size
(first) and `--length` (the others); strings are item ids drawn from `--data`'s catalogue (a
dataset directory, or `demo`), else made-up ids (which an MFN4Rec export counts as unknown: the
model then runs on empty histories, which understates its cost); numbers are random;
`--input NAME=JSON` fixes an input (e.g. `--input k=20 --input exclude_seen=false` for `recommend`).

For each protocol (REST; gRPC with `--grpc`), batch size and client count, a fixed number of
requests is shared by that many threads (each with its own keep-alive connection): it prints p50,
p95 and p99 latency, requests/s, rows/s and the error count. Then the signature is called
in-process (the highest version under `--model_base_path`, loaded here) for each batch size, one
call at a time, and its p50 is printed beside the endpoint's, with their ratio (the serving
overhead: HTTP or gRPC, JSON or protos, queueing). Clients and server share this machine's cores.
A server started here has its peak resident memory (VmHWM, Linux) printed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def _host_port(text, default_host="127.0.0.1"):
    host, _, port = text.rpartition(":")
    return host or default_host, int(port)


def start_server(base, name, flags=()):
    """`python -m mfn4rec_tf.serve` on free ports (plus `flags`); returns (process, REST port, gRPC port)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mfn4rec_tf.serve", "--model_base_path", str(base), "--model_name", name,
         "--rest_api_port", "0", "--port", "0", "--file_system_poll_wait_seconds", "0", *flags],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    log = []
    for line in process.stderr:
        log.append(line)
        match = re.search(r"REST at http://\S+?:(\d+)/v1/models/\S+, gRPC at \S+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # keep draining
            return process, int(match[1]), int(match[2])
    process.wait()
    raise SystemExit("error: the server did not start:\n" + "".join(log[-20:]))


def peak_rss_mb(pid):
    """The peak resident memory (VmHWM) of process `pid` in MB, or None where /proc cannot tell."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) / 1024 if match else None


def signature_inputs(rest_host, rest_port, name, signature):
    """Input name -> (dtype name, shape with -1 for unknown sizes), from the REST metadata API."""
    with urllib.request.urlopen(f"http://{rest_host}:{rest_port}/v1/models/{name}/metadata", timeout=60) as response:
        metadata = json.load(response)
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    if signature not in signatures:
        raise SystemExit(f"error: model {name} has no signature {signature!r} (it has {', '.join(sorted(signatures))})")
    return int(metadata["model_spec"]["version"]), {
        key: (info["dtype"], [int(dim["size"]) for dim in info["tensor_shape"].get("dim", [])])
        for key, info in signatures[signature]["inputs"].items()}


def item_pool(data):
    """Catalogue ids of a dataset directory (or the demo), or None."""
    if data is None:
        return None
    from mfn4rec_tf.dataset import load_dataset
    from mfn4rec_tf.demo import demo_dataset

    dataset = demo_dataset() if data == "demo" else load_dataset(data)
    return [str(item) for item in dataset.item_ids()[1:]]


def make_inputs(specs, batch, length, pool, fixed, rng):
    """Input name -> NumPy array for one request."""
    arrays = {}
    for name, (dtype, shape) in specs.items():
        if name in fixed:
            arrays[name] = np.asarray(fixed[name])
            continue
        dims = [(batch if i == 0 else length) if size < 0 else size for i, size in enumerate(shape)]
        if dtype == "DT_STRING":
            ids = pool or [f"item-{i}" for i in range(1000)]
            arrays[name] = np.asarray(rng.choice(ids, size=dims), dtype=object)
        elif dtype == "DT_BOOL":
            arrays[name] = np.zeros(dims, bool)
        elif dtype.startswith(("DT_INT", "DT_UINT")):
            arrays[name] = rng.integers(1, 10, size=dims).astype(np.int64)
        else:
            arrays[name] = rng.normal(size=dims).astype(np.float32)
    return arrays


def rest_body(arrays, signature):
    """The JSON request: rows when every input has a batch dimension, else columns."""
    plain = {name: (array.astype(str) if array.dtype == object else array).tolist() for name, array in arrays.items()}
    if all(array.ndim >= 1 for array in arrays.values()):
        rows = [{name: value[i] for name, value in plain.items()} for i in range(next(iter(arrays.values())).shape[0])]
        return json.dumps({"signature_name": signature, "instances": rows}).encode()
    return json.dumps({"signature_name": signature, "inputs": plain}).encode()


def grpc_request(arrays, specs, name, signature):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for key, array in arrays.items():
        dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(specs[key][0]))
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    return request


def drive(call_factory, payloads, clients, requests):
    """Runs `requests` calls over `clients` threads; returns (latencies in s, errors, wall time)."""
    lock = threading.Lock()
    state = {"next": 0}
    latencies, errors = [], []

    def worker():
        call = call_factory()
        while True:
            with lock:
                index = state["next"]
                state["next"] += 1
            if index >= requests:
                return
            start = time.perf_counter()
            try:
                call(payloads[index % len(payloads)])
            except Exception as error:
                with lock:
                    errors.append(repr(error))
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(latencies), errors, time.perf_counter() - start


def rest_caller(host, port, path):
    def factory():
        connection = [http.client.HTTPConnection(host, port, timeout=120)]

        def call(body):
            try:
                connection[0].request("POST", path, body, {"Content-Type": "application/json"})
                response = connection[0].getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                connection[0].close()
                connection[0] = http.client.HTTPConnection(host, port, timeout=120)
                raise
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return call
    return factory


def grpc_caller(target):
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def factory():
        return lambda request: stub.Predict(request, timeout=120)
    return factory


def in_process_p50(version_dir, signature, specs, batch, length, pool, fixed, repeats):
    """Median seconds of one call of the signature, loaded in this process, on one request's inputs."""
    function = tf.saved_model.load(str(version_dir)).signatures[signature]
    rng = np.random.default_rng(1)
    arrays = make_inputs(specs, batch, length, pool, fixed, rng)
    tensors = {key: tf.constant(value, dtype=tf.dtypes.as_dtype(types_pb2.DataType.Value(specs[key][0])))
               for key, value in arrays.items()}
    for _ in range(10):
        function(**tensors)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        {key: value.numpy() for key, value in function(**tensors).items()}
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _ints(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _fixed(text):
    name, sep, value = text.partition("=")
    try:
        return name, json.loads(value) if sep and name else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", help="the model's versions; started here unless --rest is given")
    parser.add_argument("--model_name", help="default: the base path's folder name")
    parser.add_argument("--rest", help="HOST:PORT of a running REST endpoint (default: start one)")
    parser.add_argument("--grpc", action="store_true", help="also drive the gRPC endpoint")
    parser.add_argument("--grpc-target", help="HOST:PORT of the running gRPC endpoint (default: the REST host, 8500)")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--clients", type=_ints, default=[1, 8], help="concurrent clients, e.g. 1,8")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 32], help="rows per request, e.g. 1,32")
    parser.add_argument("--requests", type=int, default=300, help="requests per (protocol, batch, clients) run")
    parser.add_argument("--length", type=int, default=20, help="size of the other unknown dims (history length)")
    parser.add_argument("--data", help="dataset directory (or 'demo') whose item ids fill string inputs")
    parser.add_argument("--input", type=_fixed, action="append", default=[], metavar="NAME=JSON",
                        help="a fixed value for an input (repeatable)")
    parser.add_argument("--in-process-repeats", type=int, default=100)
    parser.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                        help="a flag for the server started here, e.g. --server-flag=--enable_batching (repeatable)")
    args = parser.parse_args(argv)
    if args.rest is None and args.model_base_path is None:
        parser.error("give --model_base_path (to start a server) or --rest HOST:PORT")
    if any(value is None for _, value in args.input):
        parser.error("--input: expected NAME=JSON")
    base = Path(args.model_base_path) if args.model_base_path else None
    name = args.model_name or (base.resolve().name if base else None)
    if name is None:
        parser.error("--model_name is needed with --rest and no --model_base_path")

    process = None
    if args.rest is None:
        process, rest_port, grpc_port = start_server(base, name, args.server_flag)
        rest_host, grpc_target = "127.0.0.1", f"127.0.0.1:{grpc_port}"
    else:
        rest_host, rest_port = _host_port(args.rest)
        grpc_target = args.grpc_target or f"{rest_host}:8500"
    try:
        version, specs = signature_inputs(rest_host, rest_port, name, args.signature)
        pool = item_pool(args.data)
        fixed = dict(args.input)
        print(f"model {name} version {version}, signature {args.signature}, inputs "
              + ", ".join(f"{key} {dtype} {shape}" for key, (dtype, shape) in specs.items())
              + f"; {args.requests} requests per run; {platform.machine()}, {os.cpu_count()} cores (shared by "
              "clients and server)" + ("" if pool else "; made-up item ids")
              + (f"; server flags: {' '.join(args.server_flag)}" if args.server_flag and not args.rest else ""))
        rows = []
        protocols = ["rest"] + (["grpc"] if args.grpc else [])
        for batch in args.batch_sizes:
            rng = np.random.default_rng(0)
            requests = [make_inputs(specs, batch, args.length, pool, fixed, rng) for _ in range(16)]
            for protocol in protocols:
                if protocol == "rest":
                    payloads = [rest_body(arrays, args.signature) for arrays in requests]
                    factory = rest_caller(rest_host, rest_port, f"/v1/models/{name}:predict")
                else:
                    payloads = [grpc_request(arrays, specs, name, args.signature) for arrays in requests]
                    factory = grpc_caller(grpc_target)
                drive(factory, payloads, 2, 20)  # warm-up
                for clients in args.clients:
                    latencies, errors, wall = drive(factory, payloads, clients, args.requests)
                    if errors:
                        print(f"  {protocol} batch {batch}: {len(errors)} errors, first: {errors[0]}")
                    ms = np.percentile(latencies, [50, 95, 99]) * 1e3 if len(latencies) else [float("nan")] * 3
                    rows.append(dict(protocol=protocol, batch=batch, clients=clients, errors=len(errors),
                                     p50=ms[0], p95=ms[1], p99=ms[2], rps=len(latencies) / wall,
                                     rows=len(latencies) * batch / wall))
        in_process = {}
        if base is not None:
            versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
            for batch in args.batch_sizes:
                in_process[batch] = in_process_p50(base / str(version if version in versions else max(versions)),
                                                   args.signature, specs, batch, args.length, pool, fixed,
                                                   args.in_process_repeats)
    finally:
        server_peak = peak_rss_mb(process.pid) if process is not None else None
        if process is not None:
            process.terminate()
            process.wait(timeout=60)

    print(f"\n{'protocol':8} {'batch':>5} {'clients':>7} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>8} {'rows/s':>9} {'in-proc p50 ms':>14} {'p50 ratio':>9}")
    for row in rows:
        local = in_process.get(row["batch"])
        extra = f"{local * 1e3:14.2f} {row['p50'] / (local * 1e3):9.1f}" if local else f"{'-':>14} {'-':>9}"
        print(f"{row['protocol']:8} {row['batch']:5d} {row['clients']:7d} {row['errors']:6d} {row['p50']:8.2f} "
              f"{row['p95']:8.2f} {row['p99']:8.2f} {row['rps']:8.1f} {row['rows']:9.1f} {extra}")
    if server_peak is not None:
        print(f"server peak resident memory (VmHWM): {server_peak:,.0f} MB")
    if process is not None and process.returncode not in (0, None):
        print(f"warning: the server exited with status {process.returncode}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
