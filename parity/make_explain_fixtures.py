"""References for the explanations (`crates/cass-core/src/explain`): pytorch-grad-cam 1.5.7's
Grad-CAM, Grad-CAM++ and LayerCAM on the committed timm fixtures (`make_fixtures.py` wrote their
weights), and attention rollout from a small implementation of Abnar and Zuidema (2020) below.
Writes crates/cass-core/fixtures/timm/explain.safetensors; the engine's tests read it with no
Python.

    python3 parity/make_explain_fixtures.py

Needs Debian's torch (python3-torch), timm==0.9.16, safetensors, grad-cam==1.5.7 and its
imports (opencv, ttach, tqdm, scikit-learn, matplotlib).
"""
import os

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import load_file, save_file

from make_fixtures import CASES, OUT

METHODS = {'gradcam': GradCAM, 'gradcam++': GradCAMPlusPlus, 'layercam': LayerCAM}


def load(name):
    model = CASES[name][0]()
    model.load_state_dict(load_file(os.path.join(OUT, f'{name}.safetensors')), strict=True)
    return model.eval()


def vit_tokens_to_grid(t, grid=4):
    """pytorch-grad-cam's ViT recipe: drop the CLS token, patches on their grid, channels first."""
    return t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)


def cams(model, layer, x, targets, reshape=None):
    """Per method: the raw map (after its ReLU, before scaling) and the final map."""
    out = {}
    for name, cls in METHODS.items():
        cam = cls(model=model, target_layers=[layer], reshape_transform=reshape)
        t = None if targets is None else [ClassifierOutputTarget(c) for c in targets]
        final = cam(input_tensor=x, targets=t)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        if t is None:
            t = [ClassifierOutputTarget(c) for c in np.argmax(cam.outputs.detach().numpy(), axis=-1)]
        raw = np.maximum(cam.get_cam_image(x, layer, t, acts, grads, False), 0)
        out[name] = (raw.astype(np.float32), final.astype(np.float32))
        cam.activations_and_grads.release()
    return out


def attention_weights(vit, x):
    """Each block's softmax(q k^T / sqrt(d)) per head, `[batch, heads, tokens, tokens]`."""
    weights = []

    def hook(attn, inputs, _out):
        a = inputs[0]
        b, n, c = a.shape
        qkv = attn.qkv(a).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        weights.append(((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1).detach().numpy())

    handles = [blk.attn.register_forward_hook(hook) for blk in vit.blocks]
    with torch.no_grad():
        vit(x)
    for h in handles:
        h.remove()
    return weights


def rollout(weights, fusion, discard_ratio):
    """Attention rollout, in float64: per block fuse the heads, drop the weakest links (never
    CLS-to-CLS), add the identity for the residual (0.5 W + 0.5 I), renormalise the rows, and
    multiply from the first block; the CLS row over the patches."""
    b, _, n, _ = weights[0].shape
    out = np.zeros((b, n - 1))
    for i in range(b):
        result = np.eye(n)
        for w in weights:
            fused = getattr(w[i].astype(np.float64), fusion)(axis=0)
            k = int(np.floor(discard_ratio * (n * n - 1)))
            if k:
                flat = fused.reshape(-1)
                order = np.argsort(flat[1:], kind='stable')[:k] + 1  # flat index 0 is CLS-to-CLS
                flat[order] = 0
                fused = flat.reshape(n, n)
            a = 0.5 * fused + 0.5 * np.eye(n)
            a = a / a.sum(axis=-1, keepdims=True)
            result = a @ result
        out[i] = result[0, 1:]
    return out.astype(np.float32)


def main():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(2023)
    # 96 px puts a 3x3 grid at the tiny ResNets' last stage (32x downsampling).
    x_cnn = torch.randn(2, 3, 96, 96, generator=gen)
    x_vit = load_file(os.path.join(OUT, 'vit_tiny.io.safetensors'))['input']
    out = {'cnn.input': x_cnn, 'vit.input': x_vit}
    chosen = [3, 7]
    for name in ['resnet_basic', 'resnet_bottleneck', 'vit_tiny']:
        model = load(name)
        if name.startswith('resnet'):
            layer, x, reshape = model.layer4[-1], x_cnn, None
        else:
            layer, x, reshape = model.blocks[-1].norm1, x_vit, vit_tokens_to_grid
        for tag, targets in [('predicted', None), ('chosen', chosen)]:
            for method, (raw, final) in cams(model, layer, x, targets, reshape).items():
                out[f'{name}.{method}.{tag}.raw'] = torch.from_numpy(raw)
                # Final maps at the input size for Grad-CAM only: the other methods share its
                # scaling and resize, and the fixture stays small.
                if method == 'gradcam':
                    out[f'{name}.{method}.{tag}.map'] = torch.from_numpy(final)
        if name == 'resnet_bottleneck':
            # An earlier stage, explained through the later stages' BatchNorm in eval mode.
            cam = GradCAM(model=model, target_layers=[model.layer2[-1]])
            out[f'{name}.gradcam.layer2.map'] = torch.from_numpy(cam(input_tensor=x, targets=None).astype(np.float32))
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            t = [ClassifierOutputTarget(c) for c in np.argmax(cam.outputs.detach().numpy(), axis=-1)]
            raw = np.maximum(cam.get_cam_image(x, model.layer2[-1], t, acts, grads, False), 0)
            out[f'{name}.gradcam.layer2.raw'] = torch.from_numpy(raw.astype(np.float32))
            cam.activations_and_grads.release()
        with torch.no_grad():
            out[f'{name}.logits.cnn' if name.startswith('resnet') else f'{name}.logits.vit'] = model(x)
    vit = load('vit_tiny')
    weights = attention_weights(vit, x_vit)
    for fusion in ['mean', 'max', 'min']:
        for ratio in [0.0, 0.9]:
            out[f'rollout.{fusion}.{ratio}'] = torch.from_numpy(rollout(weights, fusion, ratio))
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, 'explain.safetensors'))
    print(f'{len(out)} tensors, {os.path.getsize(os.path.join(OUT, "explain.safetensors"))} bytes')


if __name__ == '__main__':
    main()
