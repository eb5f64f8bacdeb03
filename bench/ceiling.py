"""The ceiling: a Flask app whose only route returns {"ok": true}.

Served by bench/ under the same gunicorn settings as the service, it measures what
Flask + gunicorn can do on this machine at all: `gunicorn bench.ceiling:app`.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def ok():
    return jsonify(ok=True)
