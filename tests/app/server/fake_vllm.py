"""A stand-in for `python -m vllm.entrypoints.openai.api_server`: serves /v1/models on --port, nothing else.

Run as `python fake_vllm.py -m vllm... --served-model-name NAME --port N` (the launcher's arguments);
with FAKE_VLLM_EXIT set it exits at once with that code, as a broken vLLM environment does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    if os.environ.get("FAKE_VLLM_EXIT"):
        print("fake vLLM: refusing to start", file=sys.stderr)
        sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="fake")
    known, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "-m"])
    body = json.dumps({"object": "list", "data": [{"id": known.served_model_name}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/v1/models" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return  # quiet: the test reads what was served, not the access log

    ThreadingHTTPServer((known.host, known.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
