"""DICOM -> model-ready RGB: where the time goes, per phase, on one core.

Phases (the functions the gateway runs, in its order):
  read     parse the Part 10 bytes, length checks, displayability checks
  decode   one frame's stored values (pylibjpeg for compressed syntaxes)
  window   modality LUT + window (+ colour handling) to 8-bit RGB
  resize   fit to the gateway's long-side cap (grey resized before it becomes RGB),
           and the RGB bytes an engine takes

Cases: a generated uncompressed 512x512 CT (with and without a window in the file),
pydicom's 693_J2KI.dcm (512x512 CT, JPEG 2000) and the middle frame of its 30-frame
YBR ultrasound (JPEG baseline). Writes docs/benchmarks/dicom_decode.{json,png}.

    python loadtest/bench_dicom.py [--repeat 200] [--max-side 1024]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from tqdm import tqdm

from service.config import ImageLimits
from service.media.dicom import (
    DicomOptions,
    check_image,
    decode_frame,
    dicom_to_rgb,
    read_dataset,
    render_frame,
)
from service.media.images import fit_array

PHASES = ("read", "decode", "window", "resize")
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def generated_ct(with_window: bool) -> bytes:
    """An uncompressed 512x512 CT slice: a body of soft tissue with a bone ring in air,
    stored as CT scanners do (unsigned + rescale intercept -1024)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    yy, xx = np.mgrid[:512, :512]
    radius = np.hypot(yy - 256, xx - 256)
    hu = np.full((512, 512), -1000, dtype=np.int32)  # air
    hu[radius < 200] = 40  # soft tissue
    hu[(radius > 170) & (radius < 185)] = 700  # bone
    hu += np.random.default_rng(0).integers(-20, 20, size=hu.shape, dtype=np.int32)
    stored = (hu + 1024).clip(0, 4095).astype(np.int16)
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    if with_window:
        ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def cases() -> dict[str, bytes]:
    def testdata(name: str) -> bytes:
        return Path(get_testdata_file(name)).read_bytes()

    return {
        "CT 512x512 uncompressed, file window": generated_ct(with_window=True),
        "CT 512x512 uncompressed, percentile window": generated_ct(with_window=False),
        "693_J2KI.dcm (CT 512x512, JPEG 2000)": testdata("693_J2KI.dcm"),
        "examples_ybr_color.dcm (US 30 frames, JPEG, middle frame)": testdata(
            "examples_ybr_color.dcm"
        ),
    }


def four_gib_declared() -> bytes:
    """CT_small.dcm whose Pixel Data declares 4 GiB: refused without reading it (the
    test bounds the memory; its time is measured here, where load cannot flake it)."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    at = data.find(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010) Pixel Data, explicit VR OW
    return data[: at + 8] + (0xFFFFFFF0).to_bytes(4, "little") + data[at + 12 :]


def refusals(limits: ImageLimits, repeat: int) -> dict[str, float]:
    """Median ms until a hostile file is refused (a 4xx, nothing decoded)."""
    from service import errors

    def refuse(data: bytes) -> float:
        started = time.perf_counter()
        try:
            dicom_to_rgb(data, DicomOptions(), limits)
        except errors.ServiceError:
            return (time.perf_counter() - started) * 1000
        raise AssertionError("not refused")

    hostile = {"4 GiB declared Pixel Data length": four_gib_declared()}
    return {
        name: round(statistics.median(refuse(data) for _ in range(repeat)), 3)
        for name, data in hostile.items()
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000, value


def measure(data: bytes, limits: ImageLimits, repeat: int) -> dict[str, object]:
    options = DicomOptions()
    samples: dict[str, list[float]] = {phase: [] for phase in (*PHASES, "total")}
    for _ in tqdm(range(repeat), leave=False):
        t_read, ds = timed(lambda: read_dataset(data, "bench"))
        t_check, indices = timed(lambda ds=ds: check_image(ds, options, limits, "bench"))
        t_decode, stored = timed(lambda ds=ds, i=indices: decode_frame(ds, i[0], "bench"))
        t_window, rendered = timed(
            lambda ds=ds, p=stored, i=indices: render_frame(ds, p, options, i[0])
        )
        pixels = rendered[0]  # type: ignore[index]
        t_resize, image = timed(lambda p=pixels: fit_array(p, limits.max_side))
        samples["read"].append(t_read + t_check)
        samples["decode"].append(t_decode)
        samples["window"].append(t_window)
        samples["resize"].append(t_resize)
        samples["total"].append(t_read + t_check + t_decode + t_window + t_resize)
    # The composed public function, as a cross-check of the phase sum.
    end_to_end = [timed(lambda: dicom_to_rgb(data, options, limits))[0] for _ in range(repeat)]
    return {
        "median_ms": {k: round(statistics.median(v), 3) for k, v in samples.items()},
        "p90_ms_total": round(float(np.percentile(samples["total"], 90)), 3),
        "dicom_to_rgb_median_ms": round(statistics.median(end_to_end), 3),
        "output": [image.width, image.height],  # type: ignore[attr-defined]
        "bytes": len(data),
    }


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    left = np.zeros(len(names))
    for phase in PHASES:
        values = np.array([results[n]["median_ms"][phase] for n in names])
        ax.barh(names, values, left=left, label=phase)
        left += values
    ax.axvline(10, color="grey", linestyle="--", linewidth=1, label="10 ms target")
    ax.set_xlabel("median ms per image (one core)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("DICOM -> model-ready RGB, by phase")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per case")
    parser.add_argument("--max-side", type=int, default=ImageLimits().max_side)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    limits = ImageLimits(max_side=args.max_side)
    results: dict[str, dict] = {}
    for name, data in tqdm(cases().items(), desc="cases"):
        measure(data, limits, 5)  # warm-up: imports, decoder plugins, caches
        results[name] = measure(data, limits, args.repeat)
    print(f"\nmedian ms per image, max side {args.max_side}, {args.repeat} runs")
    print(f"{'case':58} " + " ".join(f"{p:>7}" for p in (*PHASES, "total")) + "   p90")
    for name, r in results.items():
        m = r["median_ms"]
        cells = " ".join(f"{m[p]:7.2f}" for p in (*PHASES, "total"))
        print(f"{name:58} {cells} {r['p90_ms_total']:6.2f}")
    refused = refusals(limits, args.repeat)
    for name, ms in refused.items():
        print(f"refused: {name}: {ms:.2f} ms median")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"max_side": args.max_side, "repeat": args.repeat, "results": results,
              "refusals_median_ms": refused}  # fmt: skip
    (args.out / "dicom_decode.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out / "dicom_decode.png")
    print(f"wrote {args.out / 'dicom_decode.json'} and dicom_decode.png")


if __name__ == "__main__":
    main()
