"""One traced request through a real gateway, Redis and worker, drawn as a waterfall.

    python loadtest/trace_waterfall.py [--out docs/operations-trace.png]

Starts an OTLP/HTTP receiver, redis-server, a gateway and a worker (fake engine:
16 tokens at 20 ms) with tracing on, sends one chat request with a CT image
(DICOM data URL) and a client `traceparent`, and plots the trace's spans on one
time axis, one row per span, coloured by the process that sent it. This is the
picture in docs/operations.md.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "operations-trace.png")
    args = parser.parse_args()
    from pydicom.data import get_testdata_file

    from service.otlp_receiver import OtlpReceiver
    from service.processes import MODEL, Cluster

    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    url = "data:application/dicom;base64," + base64.b64encode(dicom).decode()
    body = {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url, "dicom": {"window": "lung"}}},
                    {"type": "text", "text": "Findings?"},
                ],
            }
        ],
    }
    trace_id = secrets.token_hex(16)
    header = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with OtlpReceiver() as receiver, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(
            Path(tmp),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
            GMAIVL_FAKE_TOKEN_INTERVAL="0.02",
        )
        try:
            cluster.add_worker()
            gateway = cluster.add_gateway()
            httpx.post(gateway + "/v1/chat/completions", json=body, timeout=30)  # warm-up
            response = httpx.post(
                gateway + "/v1/chat/completions",
                json=body,
                headers={"traceparent": header, "X-Request-Id": "waterfall-1"},
                timeout=30,
            )
            response.raise_for_status()
            deadline = time.monotonic() + 20
            while len(receiver.trace(trace_id)) < 9 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            cluster.close()
        spans = sorted(receiver.trace(trace_id), key=lambda s: (s.start_ns, -s.end_ns))
    plot(spans, args.out)
    for s in spans:
        print(f"{s.service:16s} {s.name:28s} {s.seconds * 1000:8.2f} ms")
    print(f"wrote {args.out}")


def plot(spans: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(s.start_ns for s in spans)
    colours = {"gmai-vl-gateway": "#1f77b4", "gmai-vl-worker": "#ff7f0e"}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(spans) + 1.2))
    for row, s in enumerate(spans):
        start, width = (s.start_ns - t0) / 1e6, max((s.end_ns - s.start_ns) / 1e6, 0.2)
        ax.barh(row, width, left=start, color=colours.get(s.service, "#2ca02c"))
        ax.text(start + width + 1, row, f"{s.name}  {width:.1f} ms", va="center", fontsize=8)
        for name, at, _ in s.events:
            ax.plot([(at - t0) / 1e6], [row], "k|", markersize=12)
            ax.text((at - t0) / 1e6, row - 0.4, name, fontsize=7)
    ax.set_xlim(0, (max(s.end_ns for s in spans) - t0) / 1e6 * 1.3)  # room for the labels
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the request arrived")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), loc="center right", fontsize=8)
    ax.set_title(f"One request, one trace ({spans[0].trace_id[:8]}…): gateway → Redis → worker")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
