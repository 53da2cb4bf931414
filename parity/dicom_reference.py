"""The reference for cass-ssl's DICOM pixels: pydicom's values for every file of its test corpus.

    python3 parity/dicom_reference.py OUT_DIR [FILE ...]

With no FILE, reads every file in the installed pydicom wheel's `data/test_files` (pydicom 3.0.x
with its pylibjpeg and pillow plugins: parity/requirements-dicom.txt). For each file it writes
OUT_DIR/index.json (one entry per file: decoded, or skipped with pydicom's reason) and, for
decoded files, raw little-endian arrays for frames 0, the middle one and the last:

  NAME.modality.f64   pydicom's `apply_modality_lut(pixel_array)` (monochrome), the pixel array
                      itself (RGB: pydicom converts YBR), or `apply_color_lut` (PALETTE COLOR),
                      float64 [frames, rows, columns, channels]
  NAME.auto.u8        the 8-bit image cass-ssl must make by default: the file's first window
                      through `apply_voi_lut`, else the image's 0.5-99.5 percentiles
                      (`np.percentile`); colour scaled from its full range
  NAME.modality-pillow.f64
                      lossy syntaxes: the same through pydicom's pillow decoder, where it decodes
  NAME.lung.u8        monochrome only: the `lung` preset (-600/1500) through `apply_windowing`

The 8-bit scaling of a windowed value v is floor((v - y_min) / (y_max - y_min) * 255 + 0.5),
where [y_min, y_max] is the range `apply_windowing` maps into; MONOCHROME1 is then inverted
(255 - x). The spec __test__/dicom.spec.ts runs this script and compares cass-ssl's output.
"""

import copy
import json
import os
import sys
import warnings

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

warnings.simplefilter("ignore")

LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}


def to8(unit):
    return np.clip(np.floor(unit * 255 + 0.5), 0, 255).astype(np.uint8)


def output_range(ds):
    """The range `apply_windowing` maps into (pydicom 3.0, pixels/processing.py)."""
    bits = int(ds.BitsStored)
    if ds.PixelRepresentation == 0:
        y_min, y_max = 0, 2**bits - 1
    else:
        y_min, y_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return y_min, y_max


def windowed(values, ds):
    y_min, y_max = output_range(ds)
    return to8((apply_voi_lut(values, ds) - y_min) / (y_max - y_min))


def percentiles(frame):
    low, high = np.percentile(frame, [0.5, 99.5])
    span = high - low
    if span <= 0:
        return np.zeros(frame.shape, np.uint8)
    return to8(np.clip((frame - low) / span, 0, 1))


def reference(path):
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as e:
        return {"status": "skipped", "reason": f"pydicom cannot read it: {type(e).__name__}: {e}"[:200]}, None
    if "PixelData" not in ds:
        return {"status": "skipped", "reason": "no Pixel Data: not an image"}, None
    try:
        arr = ds.pixel_array
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {"status": "skipped", "reason": f"pydicom cannot decode it: {type(e).__name__}: {first}"[:200]}, None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    pi = ds.PhotometricInterpretation
    channels = 3 if int(ds.SamplesPerPixel) == 3 else 1
    arr = arr.reshape(frames, rows, columns, channels)
    chosen = sorted({0, frames // 2, frames - 1})
    arr = arr[chosen]
    arrays = {}
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr[..., 0], ds)
        arrays["modality"] = rgb.astype(np.float64)
        bits = rgb.dtype.itemsize * 8
        arrays["auto"] = rgb if bits == 8 else to8(rgb / (2**bits - 1))
        channels = 3
    elif pi.startswith("MONOCHROME"):
        values = apply_modality_lut(arr, ds).astype(np.float64)
        arrays["modality"] = values
        if "WindowCenter" in ds and "WindowWidth" in ds:
            auto = windowed(values, ds)
        else:
            auto = np.stack([percentiles(f) for f in values])
        lung = copy.deepcopy(ds)
        lung.WindowCenter, lung.WindowWidth = -600, 1500
        if "VOILUTFunction" in lung:
            del lung.VOILUTFunction
        lung_8 = windowed(values, lung)
        if pi == "MONOCHROME1":
            auto, lung_8 = 255 - auto, 255 - lung_8
        arrays["auto"], arrays["lung"] = auto, lung_8
    else:
        arrays["modality"] = arr.astype(np.float64)
        bits = int(ds.BitsStored)
        arrays["auto"] = arr.astype(np.uint8) if bits == 8 else to8(arr / (2**bits - 1))
    lossy = str(ds.file_meta.TransferSyntaxUID) in LOSSY
    if lossy and pi != "PALETTE COLOR":
        # pydicom's two decoders of lossy codestreams (pylibjpeg's libjpeg and openjpeg, pillow's
        # libjpeg-turbo and openjpeg) differ by up to 3 grey levels on this corpus: the second is
        # kept too, and a reader within the tolerance of either agrees with pydicom.
        try:
            other = pydicom.dcmread(path, force=True)
            other.pixel_array_options(decoding_plugin="pillow")
            second = other.pixel_array.reshape(frames, rows, columns, channels)[chosen]
            arrays["modality-pillow"] = (
                apply_modality_lut(second, ds) if pi.startswith("MONOCHROME") else second
            ).astype(np.float64)
        except Exception:
            pass
    info = {
        "status": "decoded",
        "transferSyntax": str(ds.file_meta.TransferSyntaxUID),
        "lossy": lossy,
        "pillow": "modality-pillow" in arrays,
        "photometric": pi,
        "frames": frames,
        "compared": chosen,
        "shape": [len(chosen), rows, columns, channels],
    }
    return info, arrays


def main():
    out = sys.argv[1]
    files = sys.argv[2:]
    if not files:
        corpus = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
        files = sorted(
            os.path.join(corpus, f) for f in os.listdir(corpus) if os.path.isfile(os.path.join(corpus, f))
        )
    os.makedirs(out, exist_ok=True)
    index = {"pydicom": pydicom.__version__, "numpy": np.__version__, "files": {}}
    for path in files:
        name = os.path.basename(path)
        info, arrays = reference(path)
        info["path"] = os.path.abspath(path)
        index["files"][name] = info
        for kind, a in (arrays or {}).items():
            floats = kind.startswith("modality")
            a.astype("<f8" if floats else "u1").tofile(os.path.join(out, f"{name}.{kind}.{'f64' if floats else 'u8'}"))
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
