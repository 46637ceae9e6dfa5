"""Fault suite (issue 15): hostile input, hostile clients and crashes against a real export and server.

    python benchmarks/fault_suite.py [--quick] [--out DIR]

Trains a tiny run on a small generated dataset (`python -m mfn4rec_tf.fit --epochs 1 --quiet ...`),
exports it (`python -m mfn4rec_tf.export`), starts `python -m mfn4rec_tf.serve` on 127.0.0.1 with
ephemeral ports, then runs each fault below, every one bounded in time and in count, on loopback
only. It prints a table `fault | expected | observed | pass` and the server's peak RSS (VmHWM from
/proc/PID/status), and exits 1 when a row fails (2 when the demo model cannot be made at all).

Faults:
 1  gRPC Predict with a TensorProto claiming shape [100000000, 1] and holding one string
 2  REST recommend with more rows than --max_rows, and with rows x k over --max_rows_times_k
 3  more idle keep-alive connections, slow partial requests and silent connections than
    --rest_connection_limit, then a new client
 4  a version copied in non-atomically (a truncated saved_model.pb first, completed afterwards)
 5  a version folder numbered above int64
 6  JSON nested 100 deep, a lone surrogate, a 5,000-digit /versions/N, gRPC dtype 9999
 7  kill -9 during fit then --resume (full run only); kill -9 during export then a new export
    (full run only)
 8  a corrupt version (saved_model.pb truncated)
 9  concurrent clients while a new version is loaded and takes over
 10 generic CSV pipeline with hostile lines: an empty id (pandas' NaN), a 'NaN' timestamp
    (quick and full), a literal 'NaN' item id (full run only)

`--quick` skips row 7 and the literal-'NaN' id row, and opens fewer connections; it takes well
under a minute once the demo model is exported. `--run DIR` reuses a finished fit run instead of
training one; `--keep` keeps the scratch directory (always kept with `--out`).

Rows named in `KNOWN_FAILING_UNTIL_HARDENING` are printed as `known` and do not change the exit
status: faults that the sibling `hardening` branch is still fixing. Keep that set empty unless a
row fails for that reason; remove a name as soon as its fix lands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this tree's mfn4rec_tf, the one the subprocesses run (see Suite.env)
NAME = "demo"
K = 5
TINY_FIT = ["--patience", "1", "--quiet", "--protocol", "leave-one-out", "--max-length", "6",
            "--set", "model.memory_dim=8", "--set", "model.fc_hidden_units=8",
            "--set", "model.modality_hidden_units=6", "--set", "model.id_hidden_units=6"]
MAX_ROWS = 64
MAX_ROWS_TIMES_K = 100
BIG_VERSION = "9" * 25  # > 2^63-1

# Rows (by name) that fail only because the `hardening` branch has not landed yet: reported as
# "known", not counted as failures. Empty: every quick and full row passes on this branch's base.
KNOWN_FAILING_UNTIL_HARDENING: frozenset[str] = frozenset()


class Suite:
    def __init__(self, out: Path, quick: bool):
        self.out = out
        self.quick = quick
        self.rows = []  # (name, expected, observed, passed)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), TF_CPP_MIN_LOG_LEVEL="2")
        self.server = None
        self.server_log = []
        self.item_ids = []

    # ---- bookkeeping -------------------------------------------------------------------------
    def row(self, name, expected, observed, passed):
        self.rows.append((name, expected, str(observed), bool(passed)))
        mark = "ok" if passed else ("known" if name in KNOWN_FAILING_UNTIL_HARDENING else "FAIL")
        print(f"[{mark}] {name}: {observed}", flush=True)

    def fault(self, name, expected, function):
        """Runs one check; an exception in it is a failing row (with the exception as the observation)."""
        try:
            observed, passed = function()
        except Exception as error:  # any surprise is this row's failure
            observed, passed = f"{type(error).__name__}: {error}"[:300], False
        self.row(name, expected, observed, passed)

    def run_cli(self, args, timeout, log):
        with open(self.out / log, "w") as handle:
            return subprocess.run([sys.executable, *args], check=False, cwd=self.out, env=self.env, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode

    # ---- demo model --------------------------------------------------------------------------
    def make_data(self):
        from mfn4rec_tf.dataset import write_dataset
        from mfn4rec_tf.demo import DemoSpec, generate

        items, interactions, features, _ = generate(DemoSpec(num_users=300, num_items=200, max_length=15))
        self.item_ids = [str(item) for item in items["item_id"].tolist()[:20]]
        return write_dataset(self.out / "data", name="small", items=items, interactions=interactions,
                             features=features)

    def fit(self, data, run, epochs, log, background=False):
        args = ["-m", "mfn4rec_tf.fit", "--data", str(data), "--out", str(run), "--epochs", str(epochs), *TINY_FIT]
        if background:
            handle = open(self.out / log, "w")  # closed by the caller's wait
            return subprocess.Popen([sys.executable, *args], cwd=self.out, env=self.env, stdout=handle,
                                    stderr=subprocess.STDOUT)
        return self.run_cli(args, 600, log)

    def export_args(self, run, base):
        return ["-m", "mfn4rec_tf.export", "--run", str(run), "--name", NAME, "--base", str(base), "--k", str(K)]

    # ---- server ------------------------------------------------------------------------------
    def start_server(self, base, connection_limit):
        command = [sys.executable, "-m", "mfn4rec_tf.serve", "--model_base_path", str(base), "--model_name", NAME,
                   "--rest_api_port", "0", "--port", "0", "--file_system_poll_wait_seconds", "0.5",
                   "--max_rows", str(MAX_ROWS), "--max_rows_times_k", str(MAX_ROWS_TIMES_K),
                   "--rest_connection_limit", str(connection_limit), "--rest_idle_timeout", "60",
                   "--rest_request_timeout", "60"]
        self.server = subprocess.Popen(command, cwd=self.out, env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
        ports = []
        ready = threading.Event()

        def read():
            for line in self.server.stdout:
                self.server_log.append(line)
                found = re.search(r"REST at http://[^:]+:(\d+)/.*gRPC at .*:(\d+)", line)
                if found:
                    ports.extend(int(port) for port in found.groups())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(180) or not ports:
            raise RuntimeError("the server did not start:\n" + "".join(self.server_log[-20:]))
        self.rest_port, self.grpc_port = ports
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def alive(self):
        return self.server.poll() is None

    def memory(self, key="VmHWM"):
        """kB of `key` in /proc/PID/status of the server."""
        text = Path(f"/proc/{self.server.pid}/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1))

    def http(self, method, path, body=None, timeout=10):
        """(status, body text) of one REST request; `body` is bytes, str or a JSON-able object."""
        if body is not None and not isinstance(body, bytes):
            body = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8", "surrogatepass")
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def predict_ok(self, path=""):
        status, text = self.http("POST", f"/v1/models/{NAME}{path}:predict",
                                 {"instances": [self.item_ids[:3], self.item_ids[3:6]]})
        return status == 200 and "item_ids" in text, status

    def status(self):
        """version -> (state, error message), from GET /v1/models/NAME."""
        status, text = self.http("GET", f"/v1/models/{NAME}")
        if status != 200:
            return {}
        return {int(entry["version"]): (entry["state"], entry.get("status", {}).get("error_message", ""))
                for entry in json.loads(text)["model_version_status"]}

    def wait_status(self, version, condition, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status().get(version)
            if state is not None and condition(state):
                return state
            time.sleep(0.2)
        return self.status().get(version)

    def grpc_predict(self, tensor, signature="serving_default"):
        """The gRPC status code name of a Predict call with `history` = `tensor` ("OK" on success)."""
        import grpc
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = NAME
        request.model_spec.signature_name = signature
        request.inputs["history"].CopyFrom(tensor)
        try:
            response = self.stub.Predict(request, timeout=20)
        except grpc.RpcError as error:
            return error.code().name, (error.details() or "")[:160]
        return "OK", f"version {response.model_spec.version.value}"

    # ---- faults ------------------------------------------------------------------------------
    def fault_1_huge_shape(self):
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

        before = self.memory()
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"], tensor_shape=
                                        tensor_shape_pb2.TensorShapeProto(dim=[{"size": 100_000_000}, {"size": 1}]))
        code, details = self.grpc_predict(tensor)
        time.sleep(0.3)
        grown = (self.memory() - before) // 1024
        ok, _ = self.predict_ok()
        passed = code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED") and self.alive() and ok and grown < 100
        return f"{code} ({details}); alive={self.alive() and ok}; VmHWM +{grown} MiB", passed

    def fault_2_rows(self):
        rows = [self.item_ids[:3]] * (MAX_ROWS + 1)
        status, text = self.http("POST", f"/v1/models/{NAME}:predict", {
            "signature_name": "recommend", "inputs": {"history": rows, "k": K, "exclude_seen": False}})
        first = status in (400, 413) and "max_rows" in text
        rows = [self.item_ids[:3]] * (MAX_ROWS_TIMES_K // K + 1)  # <= MAX_ROWS rows, rows x k over the limit
        status_k, text_k = self.http("POST", f"/v1/models/{NAME}:predict", {
            "signature_name": "recommend", "inputs": {"history": rows, "k": K, "exclude_seen": False}})
        second = status_k in (400, 413) and "max_rows_times_k" in text_k
        return ((f"rows {MAX_ROWS + 1}: {status} {text[:90]!r}; rows x k {len(rows) * K}: {status_k} "
                 f"{text_k[:90]!r}"), first and second)

    def fault_3_connections(self, limit):
        sockets = []
        request = f"GET /v1/models/{NAME} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        partial = (f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 400\r\n"
                   "\r\n{\"instances\": [").encode()
        try:
            for _ in range(limit):  # idle keep-alive: one request answered, then nothing
                connection = socket.create_connection(("127.0.0.1", self.rest_port), timeout=10)
                connection.sendall(request)
                connection.recv(65536)
                sockets.append(connection)
            for _ in range(limit):  # slow partial requests: headers and a few bytes of the body
                connection = socket.create_connection(("127.0.0.1", self.rest_port), timeout=10)
                connection.sendall(partial)
                sockets.append(connection)
            for _ in range(limit):  # connected, silent
                sockets.append(socket.create_connection(("127.0.0.1", self.rest_port), timeout=10))
            time.sleep(0.5)
            started = time.monotonic()
            status, _ = self.http("GET", f"/v1/models/{NAME}", timeout=5)
            elapsed = time.monotonic() - started
            closed = 0
            for connection in sockets:  # how many of ours the server closed to make room
                connection.settimeout(0.05)
                try:
                    closed += connection.recv(65536, socket.MSG_PEEK) == b""
                except OSError:
                    pass
        finally:
            for connection in sockets:
                connection.close()
        ok, _ = self.predict_ok()
        return ((f"{len(sockets)} connections opened (limit {limit}), {closed} closed by the server; "
                 f"new client: {status} in {elapsed:.2f} s; "
                 f"alive={self.alive() and ok}"), status == 200 and elapsed < 5 and ok)

    def fault_4_non_atomic(self, template, base):
        target = base / "3"
        shutil.copytree(template, target, ignore=shutil.ignore_patterns("saved_model.pb"))
        pb = (template / "saved_model.pb").read_bytes()
        (target / "saved_model.pb").write_bytes(pb[: len(pb) // 2])
        first = self.wait_status(3, lambda state: state[0] == "END", 30)
        (target / "saved_model.pb").write_bytes(pb)  # the copy completes
        second = self.wait_status(3, lambda state: state[0] == "AVAILABLE", 30)
        _, served = self.grpc_predict(self.history_tensor())
        ok, _ = self.predict_ok()
        passed = first is not None and first[0] == "END" and second is not None and second[0] == "AVAILABLE"
        return (f"half-copied: {first and first[0]}; completed: {second and second[0]}; predict {served}",
                passed and ok and served == "version 3")

    def fault_5_big_version(self, template, base):
        shutil.copytree(template, base / BIG_VERSION)
        time.sleep(1.5)  # three polls
        versions = self.status()
        ok, _ = self.predict_ok()
        status, _ = self.http("GET", f"/v1/models/{NAME}/versions/{BIG_VERSION}")
        warned = any("ignored" in line and BIG_VERSION in line for line in self.server_log)
        passed = ok and set(versions) == {1} and status == 404 and warned
        return ((f"versions {sorted(versions)}; predict ok={ok}; GET its /versions/: {status}; warning logged="
                 f"{warned}"), passed)

    def fault_6_hostile_input(self):
        from tensorflow.core.framework import tensor_pb2

        results = []
        deep = '{"instances": ' + "[" * 100 + '"x"' + "]" * 100 + "}"
        results.append(("nested 100", *self.http("POST", f"/v1/models/{NAME}:predict", deep)))
        results.append(("lone surrogate", *self.http("POST", f"/v1/models/{NAME}:predict",
                                                      '{"instances": [["\\ud800"]]}')))
        results.append(("raw surrogate bytes", *self.http("POST", f"/v1/models/{NAME}:predict",
                                                           b'{"instances": [["\xed\xa0\x80"]]}')))
        digits = "7" * 5000
        results.append(("/versions/5000 digits", *self.http("GET", f"/v1/models/{NAME}/versions/{digits}")))
        results.append(("predict /versions/5000 digits", *self.http(
            "POST", f"/v1/models/{NAME}/versions/{digits}:predict", {"instances": [["x"]]})))
        observed = [f"{what}: {status}" for what, status, _ in results]
        passed = all(status in (400, 404) for _, status, _ in results)
        tensor = tensor_pb2.TensorProto(string_val=[b"x"])
        tensor.dtype = 9999
        tensor.tensor_shape.dim.add(size=1)
        tensor.tensor_shape.dim.add(size=1)
        code, _ = self.grpc_predict(tensor)
        observed.append(f"gRPC dtype 9999: {code}")
        ok, _ = self.predict_ok()
        return "; ".join(observed) + f"; alive={self.alive() and ok}", passed and code == "INVALID_ARGUMENT" and ok

    def fault_8_corrupt(self, template, base):
        staging = base / ".copy-2"
        shutil.copytree(template, staging)
        with open(staging / "saved_model.pb", "r+b") as handle:
            handle.truncate(100)
        staging.rename(base / "2")
        state = self.wait_status(2, lambda state: state[0] == "END", 30)
        versions = self.status()
        ok, _ = self.predict_ok()
        _, served = self.grpc_predict(self.history_tensor())
        passed = (state is not None and state[0] == "END" and bool(state[1]) and versions.get(1, ("",))[0] ==
                  "AVAILABLE" and ok and served == "version 1")
        return ((f"version 2: {state and state[0]} ({(state[1] if state else '')[:70]!r}); v1 "
                 f"{versions.get(1, ('?',))[0]}, predict served by {served}"), passed)

    def fault_9_reload_under_load(self, template, base, threads):
        counts = {"ok": 0, "failed": 0}
        failures = []
        lock = threading.Lock()
        stop = threading.Event()

        def client():
            for _ in range(400):
                if stop.is_set():
                    return
                try:
                    ok, status = self.predict_ok()
                except Exception as error:  # a failed request, whatever it is
                    ok, status = False, f"{type(error).__name__}: {error}"
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if not ok and len(failures) < 3:
                        failures.append(status)

        workers = [threading.Thread(target=client) for _ in range(threads)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        staging = base / ".copy-4"
        shutil.copytree(template, staging)
        staging.rename(base / "4")
        state = self.wait_status(4, lambda state: state[0] == "AVAILABLE", 60)
        old = self.wait_status(3, lambda state: state[0] == "END", 10)
        time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.join(60)
        _, served = self.grpc_predict(self.history_tensor())
        passed = (counts["failed"] == 0 and counts["ok"] > 0 and state is not None and state[0] == "AVAILABLE"
                  and served == "version 4")
        return ((f"{threads} clients: {counts['ok']} ok, {counts['failed']} failed {failures}; version 4 "
                 f"{state and state[0]}, version 3 {old and old[0]}; now served by {served}"), passed)

    def history_tensor(self):
        import tensorflow as tf

        return tf.make_tensor_proto([self.item_ids[:3]], dtype=tf.string)

    def fault_7_kill_fit(self, data):
        run = self.out / "run-killed"
        process = self.fit(data, run, 2, "fit-killed.log", background=True)
        deadline = time.monotonic() + 300
        killed_at = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                epoch = json.loads((run / "state.json").read_text()).get("epoch", 0)
            except (OSError, ValueError):
                epoch = 0
            if epoch >= 1:  # mid-fit: one of two epochs done
                os.kill(process.pid, signal.SIGKILL)
                killed_at = epoch
                break
            time.sleep(0.2)
        code = process.wait(60)
        if killed_at is None:
            return f"not killed (fit exited {code} first)", False
        resumed = self.run_cli(["-m", "mfn4rec_tf.fit", "--resume", "--out", str(run), "--quiet"], 600,
                               "fit-resumed.log")
        state = json.loads((run / "state.json").read_text())
        finished = (run / "metrics.json").is_file()
        return ((f"killed after epoch {killed_at} (exit {code}); --resume exit {resumed}, metrics.json={finished}, "
                 f"phase {state.get('phase')}"), code == -signal.SIGKILL and resumed == 0 and finished
                and state.get("phase") == "done")

    def fault_7_kill_export(self, run, template):
        base = self.out / "export-killed"
        shutil.copytree(template, base / NAME / "1")
        args = self.export_args(run, base)
        with open(self.out / "export-killed.log", "w") as handle:
            process = subprocess.Popen([sys.executable, *args], cwd=self.out, env=self.env, stdout=handle,
                                       stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            staged = False
            while time.monotonic() < deadline and process.poll() is None:
                if any(path.name.startswith(".staging-") for path in (base / NAME).iterdir()):
                    time.sleep(0.5)  # something is being written into it
                    os.kill(process.pid, signal.SIGKILL)
                    staged = True
                    break
                time.sleep(0.05)
            code = process.wait(60)
        after_kill = sorted(path.name for path in (base / NAME).iterdir())
        if not staged:
            return f"not killed (export exited {code} first); {after_kill}", False
        again = self.run_cli(args, 600, "export-again.log")
        after = sorted(path.name for path in (base / NAME).iterdir())
        published = [name for name in after_kill if not name.startswith(".staging-")]
        passed = (code == -signal.SIGKILL and published == ["1"] and again == 0 and after == ["1", "2"])
        return f"after kill -9: {after_kill}; next export exit {again}: {after}", passed

    def fault_10_pipeline(self, literal_nan):
        lines = ["user_id,item_id,timestamp"]
        for user in range(20):
            lines += [f"u{user},i{(user * 7 + step) % 15},{1_600_000_000 + 100 * user + step}" for step in range(6)]
        hostile = ["u1,,1600000555", ",i3,1600000556", "u2,i4,NaN"]
        expected = {"missing_user_or_item": 2, "bad_timestamp": 1}
        if literal_nan:
            hostile.append("u3,NaN,1600000557")
            expected["missing_user_or_item"] = 3
        (self.out / "hostile.csv").write_text("\n".join(lines + hostile) + "\n")
        code = self.run_cli(["-m", "pipelines.generic", "--interactions", "hostile.csv", "--out",
                             str(self.out / ("pipeline-nan" if literal_nan else "pipeline"))], 120,
                            "pipeline-nan.log" if literal_nan else "pipeline.log")
        text = (self.out / ("pipeline-nan.log" if literal_nan else "pipeline.log")).read_text()
        counted = {reason: int(count.replace(",", "")) for reason, count in
                   re.findall(r"skipped (\w+): ([\d,]+)", text)}
        summary = re.search(r"users \d+\s+items \d+\s+interactions \d+", text)
        return (f"exit {code}; skipped {counted}; {summary.group(0) if summary else ''}",
                code == 0 and counted == expected)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the cheap subset (no kills, fewer connections)")
    parser.add_argument("--out", help="scratch directory, kept (default: a temporary one, removed)")
    parser.add_argument("--run", help="a finished fit run to export instead of training one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="fault-suite-"))
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(out, args.quick)
    try:
        return _run(suite, args, started)
    finally:
        if suite.server is not None and suite.server.poll() is None:
            suite.server.kill()
            suite.server.wait(30)
        if not args.out and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        elif args.out or args.keep:
            print(f"scratch: {out}")


def _run(suite, args, started) -> int:
    out = suite.out
    data = suite.make_data()
    run = Path(args.run).resolve() if args.run else out / "run"
    if not args.run and suite.fit(data, run, 1, "fit.log") != 0:
        print(f"error: the demo fit failed, see {out / 'fit.log'}", file=sys.stderr)
        return 2
    exports = out / "exports"
    if suite.run_cli(suite.export_args(run, exports), 600, "export.log") != 0:
        print(f"error: the demo export failed, see {out / 'export.log'}", file=sys.stderr)
        return 2
    template = exports / NAME / "1"
    prepared = time.monotonic()
    print(f"demo model exported in {prepared - started:.0f} s", flush=True)

    base = out / "served" / NAME
    shutil.copytree(template, base / "1")
    limit = 8 if suite.quick else 32
    suite.start_server(base, limit)
    suite.fault("1 gRPC shape [1e8,1], one string", "INVALID_ARGUMENT|RESOURCE_EXHAUSTED, alive, VmHWM +<100 MiB",
                suite.fault_1_huge_shape)
    suite.fault("2 REST rows / rows x k over limits", "400|413 naming max_rows / max_rows_times_k",
                suite.fault_2_rows)
    suite.fault("6 hostile input", "REST 400|404, gRPC INVALID_ARGUMENT, no 500", suite.fault_6_hostile_input)
    suite.fault("5 version folder > int64", "ignored (warned), 404, v1 serves", lambda: suite.fault_5_big_version(
        template, base))
    suite.fault("8 corrupt version 2", "v2 END with error, v1 keeps serving", lambda: suite.fault_8_corrupt(
        template, base))
    suite.fault("4 non-atomic copy of version 3", "END, then AVAILABLE after completion; v3 serves",
                lambda: suite.fault_4_non_atomic(template, base))
    suite.fault("9 reload under concurrent clients", "0 failed requests; v4 serves",
                lambda: suite.fault_9_reload_under_load(template, base, 3 if suite.quick else 6))
    suite.fault("3 connection flood", "new client 200 within 5 s", lambda: suite.fault_3_connections(limit))
    peak = suite.memory()
    suite.server.send_signal(signal.SIGTERM)
    try:
        stopped = suite.server.wait(30)
    except subprocess.TimeoutExpired:
        stopped = "still running after 30 s"
    suite.row("server SIGTERM", "exit 0", f"exit {stopped}", stopped == 0)

    suite.fault("10 pipeline: empty ids, NaN time", "skipped missing_user_or_item 2, bad_timestamp 1; exit 0",
                lambda: suite.fault_10_pipeline(False))
    if not suite.quick:
        suite.fault("10 pipeline: literal 'NaN' item id", "skipped missing_user_or_item 3, bad_timestamp 1; exit 0",
                    lambda: suite.fault_10_pipeline(True))
        suite.fault("7 kill -9 during fit, --resume", "killed, resume exit 0, metrics.json",
                    lambda: suite.fault_7_kill_fit(data))
        suite.fault("7 kill -9 during export", "only staging left; next export publishes 2, no staging",
                    lambda: suite.fault_7_kill_export(run, template))

    faults_time = time.monotonic() - prepared
    width = max(len(name) for name, *_ in suite.rows)
    expected_width = max(len(expected) for _, expected, *_ in suite.rows)
    print()
    print(f"{'fault':<{width}} | {'expected':<{expected_width}} | observed | pass")
    print(f"{'-' * width}-|-{'-' * expected_width}-|----------|-----")
    failed = []
    for name, expected, observed, passed in suite.rows:
        verdict = "yes" if passed else ("known" if name in KNOWN_FAILING_UNTIL_HARDENING else "NO")
        print(f"{name:<{width}} | {expected:<{expected_width}} | {observed} | {verdict}")
        if not passed and name not in KNOWN_FAILING_UNTIL_HARDENING:
            failed.append(name)
    print(f"\nserver peak RSS (VmHWM): {peak / 1024:.0f} MiB")
    print(f"{'quick' if suite.quick else 'full'} run: {time.monotonic() - started:.0f} s in all, "
          f"{faults_time:.0f} s of faults after the demo export; {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
