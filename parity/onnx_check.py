"""Checks an ONNX file written by cass-ssl's `buildOnnx` with the reference tools: the ONNX
checker (full check: strict shape inference too) and onnxruntime's Python package, on random
pixels at batch 3 and at batch 1 (the batch axis is dynamic; each row must not depend on the
others).

    python3 parity/onnx_check.py model.onnx [more.onnx ...]

Needs `onnx` and `onnxruntime` (pip: onnx onnxruntime; no PyTorch). Without them it says so and
exits 0, so it can sit in a script on machines that have neither.
"""
import sys


def check(path, onnx, ort, np):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain or 'ai.onnx': o.version for o in model.opset_import}
    meta = {p.key: p.value for p in model.metadata_props}
    print(f'{path}: ir_version {model.ir_version}, opsets {opsets}, producer {model.producer_name}')
    for k, v in sorted(meta.items()):
        print(f'  {k} = {v}')

    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    _, channels, height, width = inp.shape
    pixels = np.random.default_rng(0).random((3, channels, height, width), dtype=np.float32)
    three = session.run(None, {inp.name: pixels})[0]
    one = session.run(None, {inp.name: pixels[2:3]})[0]
    assert three.shape[0] == 3 and one.shape[0] == 1, (three.shape, one.shape)
    assert np.isfinite(three).all(), 'non-finite outputs'
    gap = float(np.abs(one[0] - three[2]).max() / max(float(np.abs(three[2]).max()), 1e-6))
    assert gap < 1e-5, f'batch 1 differs from the same image in batch 3 by {gap}'
    print(f'  {inp.name} {inp.shape} -> {out.name} {list(three.shape)}; batch 1 vs batch 3 relative gap {gap:.1e}')


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        print(f'onnx_check: skipped, {e.name} is not installed (pip install onnx onnxruntime)')
        return 0
    for path in sys.argv[1:]:
        check(path, onnx, ort, np)
    return 0


if __name__ == '__main__':
    sys.exit(main())
