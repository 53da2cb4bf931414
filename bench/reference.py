"""PyTorch reference of the CASS step, for `bench/run.ts`: the same models, sizes, batch,
dtype (fp32), optimizers (one Adam per network, lr 1e-3) and thread count as
`crates/cass-core/examples/bench_step.rs`, timed the same way. Prints one JSON object.

ResNet-18/50 and every ViT are timm models; the small ResNet of `cpu-small` (width 16) is the
same torchvision-layout network written out below, since timm 0.9's ResNet has fixed widths.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import timm
from timm.models.vision_transformer import VisionTransformer


class Basic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        s = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + s)


class SmallResNet(nn.Module):
    def __init__(self, width, layers, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], width
        for i, n in enumerate(layers):
            for b in range(n):
                planes = width << i
                blocks.append(Basic(cin, planes, 2 if i > 0 and b == 0 else 1))
                cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(self.blocks(x).mean((2, 3)))


def models(name, size, head):
    if name == 'cpu-small':
        return SmallResNet(16, [1, 1, 1, 1], head), VisionTransformer(
            img_size=size, patch_size=8, embed_dim=96, depth=4, num_heads=4, num_classes=head)
    if name == 'r18-vitti':
        return timm.create_model('resnet18', num_classes=head), VisionTransformer(
            img_size=size, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=head)
    if name == 'paper':
        return timm.create_model('resnet50', num_classes=head), VisionTransformer(
            img_size=size, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=head)
    raise SystemExit(f'unknown model pair {name}')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--model', default='cpu-small')
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--what', default='step')
    p.add_argument('--threads', type=int, default=os.cpu_count())
    p.add_argument('--device', default='cpu')
    p.add_argument('--n', type=int, default=1024)
    # Two augmented views per image (the networks see 2 x batch images) and the collapse guard,
    # as the engine's `views: 2` and `collapseGuard: { weight: 1, target: 0.5, covariance: 1 }`.
    p.add_argument('--views', type=int, default=1)
    p.add_argument('--guard', action='store_true')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device('cuda' if a.device == 'cuda' else 'cpu')
    if a.what == 'matmul':
        n = a.n
        ma, mb = torch.rand(n, n, device=dev), torch.rand(n, n, device=dev)
        best = float('inf')
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            (ma @ mb).sum().item()
            if i >= a.warmup:
                best = min(best, time.perf_counter() - t0)
        print(json.dumps({'what': 'matmul', 'n': n, 'gflops': 2 * n ** 3 / best / 1e9}))
        return
    head = 128 if a.model == 'cpu-small' else 1000
    cnn, vit = (m.to(dev) for m in models(a.model, a.size, head))
    n = a.views * a.batch
    x = (torch.arange(n * 3 * a.size * a.size, dtype=torch.int64) * 2654435761 % 1000).float().div(500).sub(1)
    x = x.reshape(n, 3, a.size, a.size).to(dev)

    def cass(r, t):
        return (2 - 2 * (F.normalize(r, dim=1) * F.normalize(t, dim=1)).sum(1)).mean()

    def guard(v, target=0.5):
        z = F.normalize(v, dim=1) * v.shape[1] ** 0.5
        hinge = F.relu(target - (z.var(0, unbiased=False) + 1e-4).sqrt()).mean()
        zc = z - z.mean(0)
        cov = zc.T @ zc / z.shape[0]
        return hinge + (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]
    opt_c = torch.optim.Adam(cnn.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    opt_v = torch.optim.Adam(vit.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    if a.what != 'step':
        cnn.eval()
        vit.eval()
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        if a.what == 'step':
            r, t = cnn(x), vit(x)
            rs, ts = r.chunk(a.views), t.chunk(a.views)
            loss = cass(r, t) if a.views == 1 else 0.5 * (cass(rs[0], ts[1]) + cass(rs[1], ts[0]))
            if a.guard:
                loss = loss + sum(guard(v) for v in rs + ts) / a.views
            opt_c.zero_grad(set_to_none=True)
            opt_v.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()
            opt_v.step()
            loss.item()
        else:
            with torch.no_grad():
                (cnn if a.what == 'fwd-cnn' else vit)(x).sum().item()
        sync()
        # Every step from the first, as bench_step prints them (bench/device.py keeps them).
        print(f'step {i}: {time.perf_counter() - t0:.3f} s', file=sys.stderr, flush=True)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        'impl': f'pytorch {torch.__version__} + timm {timm.__version__}',
        'what': a.what, 'model': a.model, 'size': a.size, 'batch': a.batch, 'steps': a.steps,
        'views': a.views, 'guard': a.guard,
        'sec': {'min': times[0], 'median': med, 'max': times[-1]},
        'images_per_sec': a.batch / med,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'threads': torch.get_num_threads(),
        'blas': [l.strip() for l in torch.__config__.show().splitlines() if 'BLAS_INFO' in l or 'MKL' in l][:2],
    }))


if __name__ == '__main__':
    main()
