"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, on a free
loopback port, authentication on, storage in a temporary folder, stopped by PID.

Orthanc 1.10 binds every interface; `RemoteAccessAllowed: false` makes it refuse
anything but loopback, and the DICOM (C-STORE) server stays off unless a test asks
for it (`dicom=True`: the DICOM node tests). Then it answers only modalities the
test registers (`add_modality`), each checked by AE title and host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.processes import free_port

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
PLUGINS = ("libOrthancDicomWeb.so", "libOrthancGdcm.so")
USER, PASSWORD = "gmaivl-test", "pacs-secret-not-for-logs"
# Files loaded into every test Orthanc (pydicom ships them).
LOADED = ("CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "examples_ybr_color.dcm")


def plugin_paths() -> list[str]:
    found = []
    for name in PLUGINS:
        paths = [d / name for d in PLUGIN_DIRS if (d / name).exists()]
        if not paths:
            raise RuntimeError(f"Orthanc plugin {name} not found: `make orthanc` installs it")
        found.append(str(paths[0]))
    return found


class OrthancServer:
    def __init__(self, workdir: Path, dicom: bool = False) -> None:
        self.workdir = workdir
        self.dicom = dicom
        self.dicom_port = free_port() if dicom else None
        self.aet = "ORTHANC"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = self.url + "/dicom-web"
        self.auth = (USER, PASSWORD)
        self.process: subprocess.Popen | None = None

    def start(self) -> OrthancServer:
        binary = shutil.which("Orthanc")
        if binary is None:
            raise RuntimeError("Orthanc is not installed: `make orthanc` installs it")
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "gmaivl-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": plugin_paths(),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpCompressionEnabled": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        if self.dicom:
            config |= {
                "DicomServerEnabled": True,
                "DicomPort": self.dicom_port,
                "DicomAet": self.aet,
                "DicomCheckCalledAet": True,
                "DicomAlwaysAllowEcho": False,
                "DicomAlwaysAllowStore": False,
                "DicomCheckModalityHost": True,
                "DicomScuTimeout": 10,
                "DicomAssociationCloseDelay": 0,
            }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [binary, str(path)],
            cwd=self.workdir,
            stdout=(self.workdir / "orthanc.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.workdir / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{log}")
            try:
                if httpx.get(self.url + "/system", auth=self.auth, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("Orthanc did not answer /system in 30 s")

    def upload(self, data: bytes) -> None:
        r = httpx.post(self.url + "/instances", content=data, auth=self.auth, timeout=30)
        r.raise_for_status()
        assert r.json()["Status"] in ("Success", "AlreadyStored")

    def upload_testdata(self, names: tuple[str, ...] = LOADED) -> None:
        for name in names:
            self.upload(Path(get_testdata_file(name)).read_bytes())

    def instance_url(self, data: bytes, base: str | None = None) -> str:
        """The WADO-RS URL of a DICOM file's instance (UIDs read from the file)."""
        import io

        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        return (
            f"{base or self.dicomweb}/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )

    def pacs_entry(self, name: str = "test-pacs") -> dict[str, str]:
        return {"name": name, "base_url": self.dicomweb, "username": USER, "password": PASSWORD}

    # DIMSE (dicom=True)

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Registers a DICOM node Orthanc may send to and accept C-STORE/C-ECHO from."""
        body = {"AET": aet, "Host": host, "Port": port, "AllowEcho": True, "AllowStore": True}
        r = httpx.put(f"{self.url}/modalities/{name}", json=body, auth=self.auth, timeout=10)
        r.raise_for_status()

    def resource_id(self, uid: str, kind: str = "Study") -> str:
        """Orthanc's id of the study (or `kind`: Series, Instance) with this DICOM UID."""
        r = httpx.post(self.url + "/tools/lookup", content=uid, auth=self.auth, timeout=10)
        r.raise_for_status()
        return next(item["ID"] for item in r.json() if item["Type"] == kind)

    def send_study(
        self, modality: str, uid: str, kind: str = "Study", timeout: float = 120
    ) -> httpx.Response:
        """`POST /modalities/{name}/store`: Orthanc C-STOREs the study (or the series or
        instance of that UID) to the node."""
        body = {"Resources": [self.resource_id(uid, kind)], "Synchronous": True}
        return httpx.post(
            f"{self.url}/modalities/{modality}/store", json=body, auth=self.auth, timeout=timeout
        )

    def echo(self, modality: str) -> httpx.Response:
        return httpx.post(f"{self.url}/modalities/{modality}/echo", json={}, auth=self.auth,
                          timeout=30)  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
