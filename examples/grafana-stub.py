#!/usr/bin/env python3
"""A stand-in for Grafana's annotation API, for the demo on machines without Grafana.

POST /api/annotations (Bearer token) stores an annotation and answers
{"id": N, "message": "Annotation added"}; GET /api/annotations?tags=... lists them, newest
first. Usage: grafana-stub.py PORT TOKEN_FILE
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT = int(sys.argv[1])
with open(sys.argv[2]) as f:
    TOKEN = f.read().strip()
ANNOTATIONS = []


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def do_POST(self):
        if urlparse(self.path).path != "/api/annotations":
            return self.answer(404, {"message": "Not found"})
        if not self.authorized():
            return self.answer(401, {"message": "Unauthorized"})
        try:
            annotation = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            return self.answer(400, {"message": "bad request data"})
        annotation["id"] = len(ANNOTATIONS) + 1
        ANNOTATIONS.append(annotation)
        print(f"annotation {annotation['id']}: tags={annotation.get('tags')}", flush=True)
        self.answer(200, {"message": "Annotation added", "id": annotation["id"]})

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/api/annotations":
            return self.answer(404, {"message": "Not found"})
        if not self.authorized():
            return self.answer(401, {"message": "Unauthorized"})
        tags = parse_qs(url.query).get("tags", [])
        found = [a for a in reversed(ANNOTATIONS) if all(t in a.get("tags", []) for t in tags)]
        self.answer(200, found)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
