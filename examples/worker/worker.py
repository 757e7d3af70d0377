#!/usr/bin/env python3
"""A back-end worker that runs slow tasks one after another and pushes each
result to the user who asked for it through madx-pusher.

The web app only inserts a row into the queue (here a SQLite table) and
returns at once; this worker takes the oldest pending task, runs it, stores
the result and publishes it to the user's inbox (`POST /v1/publish` with
`user_id`). Running tasks strictly one after another also keeps any SQL
sequence they touch in order without table locks.

Standard library only:

    python3 worker.py --db tasks.db enqueue --user alice --kind report --arg 20
    python3 worker.py --db tasks.db run            # forever, polling
    python3 worker.py --db tasks.db run --drain    # until the queue is empty

Configuration comes from the environment: MADX_URL (default
http://127.0.0.1:8080), MADX_KEY and MADX_SECRET (default the demo app's).
"""

import argparse
import base64
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    arg      INTEGER NOT NULL,
    status   TEXT NOT NULL DEFAULT 'pending',
    result   TEXT
)
"""


def open_queue(path):
    db = sqlite3.connect(path)
    db.execute(SCHEMA)
    return db


def enqueue(db, user_id, kind, arg):
    cursor = db.execute(
        "INSERT INTO tasks (user_id, kind, arg) VALUES (?, ?, ?)", (user_id, kind, arg)
    )
    db.commit()
    return cursor.lastrowid


def run_task(kind, arg):
    """The slow work. A real worker renders a report, imports a file..."""
    if kind == "report":
        time.sleep(0.05)
        return {"rows": arg, "total": sum(range(arg + 1))}
    if kind == "square":
        return {"value": arg * arg}
    raise ValueError(f"unknown task kind {kind!r}")


def publish(base_url, key, secret, message):
    """POST /v1/publish; returns the message id. Retries on 5xx and network
    errors, so a result is not lost while the pusher restarts."""
    credentials = base64.b64encode(f"{key}:{secret}".encode()).decode()
    body = json.dumps(message).encode()
    for attempt in range(5):
        request = urllib.request.Request(
            f"{base_url}/v1/publish",
            data=body,
            method="POST",
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)["id"]
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise RuntimeError(f"publish refused: {error.code} {error.read().decode()}")
        except urllib.error.URLError:
            pass
        time.sleep(0.2 * 2**attempt)
    raise RuntimeError("publish failed after retries")


def run(db, base_url, key, secret, drain):
    while True:
        row = db.execute(
            "SELECT id, user_id, kind, arg FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            if drain:
                return
            time.sleep(0.5)
            continue
        task_id, user_id, kind, arg = row
        try:
            result = run_task(kind, arg)
            status = "done"
        except Exception as error:  # report the failure to the user too
            result = {"error": str(error)}
            status = "failed"
        db.execute(
            "UPDATE tasks SET status = ?, result = ? WHERE id = ?",
            (status, json.dumps(result), task_id),
        )
        db.commit()
        message_id = publish(
            base_url,
            key,
            secret,
            {
                "user_id": user_id,
                "event": f"task.{status}",
                "data": {"task_id": task_id, "kind": kind, "result": result},
            },
        )
        print(f"task {task_id} {status}, pushed to {user_id} as message {message_id}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="tasks.db", help="SQLite queue file")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("enqueue", help="queue a task (what the web app does)")
    add.add_argument("--user", required=True)
    add.add_argument("--kind", default="report")
    add.add_argument("--arg", type=int, default=10)
    work = commands.add_parser("run", help="run queued tasks one after another")
    work.add_argument("--drain", action="store_true", help="stop when the queue is empty")
    args = parser.parse_args()

    db = open_queue(args.db)
    if args.command == "enqueue":
        print(enqueue(db, args.user, args.kind, args.arg))
        return 0
    run(
        db,
        os.environ.get("MADX_URL", "http://127.0.0.1:8080"),
        os.environ.get("MADX_KEY", "demo-key"),
        os.environ.get("MADX_SECRET", "demo-secret"),
        args.drain,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
