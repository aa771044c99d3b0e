"""OHIF, the web viewer, for browser tests: npm's `@ohif/app` built `dist/` (fetched
by `make ohif`) served beside the test Orthanc's DICOMweb on one origin.

One loopback HTTP server in a thread of the test process:
- `/dicom-web/...` is forwarded to Orthanc with the PACS credentials added (the
  browser never sees them; the Host header is kept, so the URLs Orthanc writes
  into its answers point back here);
- `/app-config.js` is ours: one DICOMweb data source at this origin;
- anything else is a file of `dist/`, or `index.html` for the viewer's routes.
"""

from __future__ import annotations

import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.orthanc import OrthancServer

OHIF_VERSION = "3.13.2"  # the Makefile's OHIF_VERSION
DIST = Path(__file__).resolve().parents[1] / ".cache/ohif" / OHIF_VERSION / "package/dist"
PASSED_HEADERS = ("accept",)

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Test Orthanc',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        dicomUploadEnabled: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      },
    },
  ],
};
"""


class OhifServer:
    def __init__(self, pacs: OrthancServer, dist: Path = DIST) -> None:
        if not (dist / "index.html").exists():
            raise RuntimeError(f"OHIF {OHIF_VERSION} is not at {dist}: `make ohif` fetches it")
        self.pacs = pacs
        self.dist = dist.resolve()
        self.server: ThreadingHTTPServer | None = None
        self.client = httpx.Client(auth=pacs.auth, timeout=30)
        self.url = ""

    def start(self) -> OhifServer:
        ohif = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/dicom-web/"):
                    self.forward()
                elif self.path.split("?")[0] == "/app-config.js":
                    self.reply(200, "application/javascript", APP_CONFIG.encode())
                else:
                    self.static()

            def forward(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in PASSED_HEADERS}
                headers["Host"] = self.headers.get("Host", "")
                r = ohif.client.get(ohif.pacs.url + self.path, headers=headers)
                self.reply(r.status_code, r.headers.get("content-type", ""), r.content)

            def static(self) -> None:
                relative = self.path.split("?")[0].lstrip("/")
                path = (ohif.dist / relative).resolve()
                if not path.is_file() or not path.is_relative_to(ohif.dist):
                    path = ohif.dist / "index.html"  # a viewer route: the app decides
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self.reply(200, kind, path.read_bytes())

            def reply(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                if kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.client.close()
