"""A stub of the Lambda runtime API (2018-06-01) for one function process: hands out the events given on
the command line one by one (request id, deadline, function ARN, trace id headers), records each answer
(`response` or `error`) as one JSON line in OUT, and holds `next` open once the events are used up, as
Lambda does while no event arrives. Prints its port on stdout.

    python3 scripts/lambda-runtime-stub.py OUT EVENT.json...
"""
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out_path, event_paths = sys.argv[1], sys.argv[2:]
events = [json.load(open(p)) for p in event_paths]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        with lock:
            event = events.pop(0) if events else None
        if event is None:
            time.sleep(3600)
            return
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:dev")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000001;Sampled=0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        kind = self.path.rsplit("/", 1)[-1]  # response | error
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode(errors="replace")
        with lock, open(out_path, "a") as f:
            f.write(json.dumps({"kind": kind, "body": body}) + "\n")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
