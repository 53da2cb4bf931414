"""The reference for one VICReg step (vicreg_step.*): the resnet_basic timm backbone of
make_fixtures.py (BatchNorm in train mode), an expander of PyTorch's default initialisation, two
fixed views each through backbone and expander on its own (as main_vicreg.py), the loss as
main_vicreg.py's VICReg.forward computes it, its gradients, and the parameters after one AdamW
step (decay on matrices only). The expander's tensors are written under the engine's names
(linears.i, norms.i) in PyTorch's layout.

    python3 parity/make_vicreg_fixture.py     # after make_fixtures.py wrote resnet_basic.*

Needs torch and timm (see make_fixtures.py).
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.resnet import BasicBlock

from make_fixtures import OUT, tiny_resnet

BATCH, WIDTHS, LR, WD = 8, [32, 32, 32], 1e-2, 0.1
LAMBDA, MU, NU = 25.0, 25.0, 1.0


def off_diagonal(x):
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_loss(x, y):
    """main_vicreg.py's VICReg.forward after the projector (one process: no gather)."""
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (x.shape[0] - 1)
    cov_y = (y.T @ y) / (y.shape[0] - 1)
    d = x.shape[1]
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(d) + off_diagonal(cov_y).pow_(2).sum().div(d)
    return LAMBDA * repr_loss + MU * std_loss + NU * cov_loss, repr_loss, std_loss, cov_loss


def main():
    cfg = json.load(open(os.path.join(OUT, 'resnet_basic.json')))
    backbone = tiny_resnet(BasicBlock, cfg['base_width'], cfg['num_classes'])
    backbone.load_state_dict(load_file(os.path.join(OUT, 'resnet_basic.safetensors')), strict=True)
    backbone.reset_classifier(0)
    backbone.train()
    torch.manual_seed(400)
    layers, width = [], backbone.num_features
    for i, w in enumerate(WIDTHS):
        layers.append(nn.Linear(width, w))
        if i + 1 < len(WIDTHS):
            layers += [nn.BatchNorm1d(w), nn.ReLU(True)]
        width = w
    expander = nn.Sequential(*layers).train()
    # Sequential index -> the engine's name: Linear k -> linears.k, BatchNorm k -> norms.k.
    ours = {}
    for idx, mod in enumerate(expander):
        if isinstance(mod, nn.Linear):
            ours[idx] = f'linears.{sum(isinstance(m, nn.Linear) for m in list(expander)[:idx])}'
        elif isinstance(mod, nn.BatchNorm1d):
            ours[idx] = f'norms.{sum(isinstance(m, nn.BatchNorm1d) for m in list(expander)[:idx])}'

    def renamed(sd, prefix=''):
        out = {}
        for k, v in sd.items():
            idx, rest = k.split('.', 1)
            if rest != 'num_batches_tracked':
                out[prefix + f'{ours[int(idx)]}.{rest}'] = v.detach().clone().contiguous()
        return out

    expander_before = renamed(expander.state_dict())
    gen = torch.Generator().manual_seed(17)
    v1 = torch.randn(BATCH, 3, 32, 32, generator=gen)
    v2 = torch.randn(BATCH, 3, 32, 32, generator=gen)

    named = [(n, p) for n, p in backbone.named_parameters()] + \
            [(f'expander.{ours[int(n.split(".", 1)[0])]}.{n.split(".", 1)[1]}', p) for n, p in expander.named_parameters()]
    decayed = [p for n, p in named if p.ndim > 1]
    not_decayed = [p for n, p in named if p.ndim <= 1]
    opt = torch.optim.AdamW([{'params': decayed}, {'params': not_decayed, 'weight_decay': 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    x = expander(backbone(v1))
    y = expander(backbone(v2))
    loss, inv, var, cov = vicreg_loss(x, y)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in named}
    opt.step()

    def kept(sd):
        return {k: v.detach().clone().contiguous() for k, v in sd.items() if not k.endswith('num_batches_tracked')}

    save_file({'views': torch.cat([v1, v2]).contiguous()}, os.path.join(OUT, 'vicreg_step.io.safetensors'))
    save_file(expander_before, os.path.join(OUT, 'vicreg_step.expander.safetensors'))
    save_file(grads, os.path.join(OUT, 'vicreg_step.grads.safetensors'))
    save_file({**kept(backbone.state_dict()), **renamed(expander.state_dict(), 'expander.')},
              os.path.join(OUT, 'vicreg_step.after.safetensors'))
    with open(os.path.join(OUT, 'vicreg_step.json'), 'w') as f:
        json.dump({'loss': loss.item(), 'invariance': inv.item(), 'variance': var.item(), 'covariance': cov.item(),
                   'lr': LR, 'weight_decay': WD, 'widths': WIDTHS, 'weights': [LAMBDA, MU, NU],
                   'backbone': 'resnet_basic'}, f, indent=2)
    print(f'vicreg step loss {loss.item():.6f} (invariance {inv.item():.6f}, variance {var.item():.6f}, '
          f'covariance {cov.item():.6f})')


if __name__ == '__main__':
    main()
