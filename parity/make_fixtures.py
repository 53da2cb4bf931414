"""Parity fixtures: random-initialised timm models, their weights and their outputs on a fixed
batch, written as small safetensors files that the engine's tests load (no Python is needed to
run those tests). Also the references for one CASS and one DINO training step.

    python3 parity/make_fixtures.py            # writes crates/cass-core/fixtures/timm/
    python3 parity/make_fixtures.py --dino-only
                                               # only the DINO step (dino_step.*), from the
                                               # resnet_basic fixture already written (another
                                               # torch build changes the low bits of the other
                                               # fixtures' outputs: Debian's 1.13.1 does)
    python3 parity/make_fixtures.py --full     # also checks full-size ResNet-50 and
                                               # ViT-B/16@384 against the engine (needs cargo)
    python3 parity/make_fixtures.py --check-export FILE --model CASE
                                               # loads an exported file into timm, strict

Needs torch and timm (Debian: python3-torch python3-torchvision; pip: timm==0.9.16 safetensors).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.resnet import BasicBlock, Bottleneck, ResNet, make_blocks
from timm.models.vision_transformer import VisionTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'crates', 'cass-core', 'fixtures', 'timm')
HOST = next((l.split(': ')[1] for l in subprocess.run(['rustc', '-vV'], capture_output=True, text=True).stdout.splitlines() if l.startswith('host: ')), '')


def tiny_resnet(block, width, num_classes):
    """A genuine timm ResNet (timm's stem, blocks and head) with narrow stages."""
    m = ResNet(block, [1, 1, 1, 1], num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    stages, _ = make_blocks(block, [width, width * 2, width * 4, width * 8], [1, 1, 1, 1], inplanes=width)
    for name, stage in stages:
        setattr(m, name, stage)
    m.num_features = width * 8 * block.expansion
    m.fc = nn.Linear(m.num_features, num_classes)
    return m


def randomise_norms(model, gen):
    """Non-trivial BatchNorm/LayerNorm parameters and running statistics, so that parity covers them."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
                mod.num_batches_tracked.fill_(7)
            if isinstance(mod, VisionTransformer):
                mod.cls_token.copy_(torch.randn(mod.cls_token.shape, generator=gen) * 0.02)


CASES = {
    # name: (builder, engine config)
    'resnet_basic': (lambda: tiny_resnet(BasicBlock, 8, 10),
                     {'kind': 'resnet', 'block': 'Basic', 'layers': [1, 1, 1, 1], 'base_width': 8, 'num_classes': 10}),
    'resnet_bottleneck': (lambda: tiny_resnet(Bottleneck, 8, 10),
                          {'kind': 'resnet', 'block': 'Bottleneck', 'layers': [1, 1, 1, 1], 'base_width': 8, 'num_classes': 10}),
    'vit_tiny': (lambda: VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10),
                 {'kind': 'vit', 'image_size': 32, 'patch_size': 8, 'embed_dim': 32, 'depth': 2, 'num_heads': 4, 'num_classes': 10}),
}


def features(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


def write_case(name, model, cfg, x):
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = features(model, x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f'{name}.safetensors'))
    save_file({'input': x.contiguous(), 'logits': logits.contiguous(), 'features': feats.contiguous()},
              os.path.join(OUT, f'{name}.io.safetensors'))
    with open(os.path.join(OUT, f'{name}.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
    print(f'{name}: {sum(p.numel() for p in model.parameters())} parameters, logits {tuple(logits.shape)}')


def cass_step(cnn, vit, x, lr=1e-3):
    """One CASS step exactly as the spec: one view through both, one backward, one Adam each."""
    cnn.train()
    vit.train()
    opt_c = torch.optim.Adam(cnn.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    opt_v = torch.optim.Adam(vit.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    r, t = cnn(x), vit(x)
    loss = (2 - 2 * (F.normalize(r, dim=1, eps=1e-12) * F.normalize(t, dim=1, eps=1e-12)).sum(1)).mean()
    opt_c.zero_grad()
    opt_v.zero_grad()
    loss.backward()
    grads = ({n: p.grad.detach().clone().contiguous() for n, p in cnn.named_parameters()},
             {n: p.grad.detach().clone().contiguous() for n, p in vit.named_parameters()})
    opt_c.step()
    opt_v.step()
    return loss.item(), grads


class DinoHead(nn.Module):
    """DINO's projection head: a 3-layer MLP to a bottleneck, L2 normalisation, then a
    weight-normalised linear layer without bias whose norm scale g is fixed at 1."""

    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def dino_loss(student, teacher, center, crops, teacher_temp, student_temp):
    """Cross-entropy between the centred, sharpened teacher on each global view a and the student
    on every other view v != a, averaged over the batch and the pairs."""
    s = (student / student_temp).chunk(crops)
    t = F.softmax((teacher - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, pairs = 0, 0
    for a, q in enumerate(t):
        for v in range(crops):
            if v != a:
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                pairs += 1
    return total / pairs


DINO = dict(lr=0.01, weight_decay=0.3, clip=3.0, momentum=0.9, center_momentum=0.9, teacher_temp=0.04,
            student_temp=0.1, out_dim=32, hidden_dim=16, bottleneck_dim=8)


def dino_step():
    """One DINO step (student and teacher from the resnet_basic fixture, BatchNorm in train mode
    on both, no augmentation: the same prepared crops on both sides), written as dino_step.*.

    lr and weight decay are larger than DINO's so that the decay (lr * wd = 3e-3 of every matrix)
    stands well above the comparison's tolerance; clip is set so that some gradients are clipped
    and others not (checked below)."""
    c = DINO
    cfg = json.load(open(os.path.join(OUT, 'resnet_basic.json')))
    weights = load_file(os.path.join(OUT, 'resnet_basic.safetensors'))
    io = load_file(os.path.join(OUT, 'resnet_basic.io.safetensors'))
    gen = torch.Generator().manual_seed(91)
    batch = io['input'].shape[0]
    # Crop 1 of every image, then crop 2; likewise the two 16 px local crops.
    globals_ = torch.cat([io['input'], torch.randn(batch, 3, 32, 32, generator=gen)])
    locals_ = torch.randn(2 * batch, 3, 16, 16, generator=gen)
    center = torch.randn(1, c['out_dim'], generator=gen) * 0.1  # a non-zero centre, so that it counts

    def backbone():
        m = tiny_resnet(BasicBlock, cfg['base_width'], cfg['num_classes'])
        m.load_state_dict(weights, strict=True)
        m.reset_classifier(0)  # pooled features, as our forward_features
        return m.train()

    student, teacher = backbone(), backbone()
    # PyTorch's default Linear init (not DINO's std 0.02) keeps the tiny head's activations and
    # gradients well away from zero; the head is saved, so the init itself is not under test.
    torch.manual_seed(300)
    student_head = DinoHead(student.num_features, c['out_dim'], c['hidden_dim'], c['bottleneck_dim'])
    teacher_head = DinoHead(student.num_features, c['out_dim'], c['hidden_dim'], c['bottleneck_dim'])
    teacher_head.load_state_dict(student_head.state_dict())
    head_before = {k: v.detach().clone().contiguous() for k, v in student_head.state_dict().items()}

    named = [(n, p) for n, p in student.named_parameters()] + \
            [('head.' + n, p) for n, p in student_head.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if p.ndim > 1]
    not_decayed = [p for n, p in named if p.ndim <= 1]
    opt = torch.optim.AdamW([{'params': decayed}, {'params': not_decayed, 'weight_decay': 0.0}],
                            lr=c['lr'], betas=(0.9, 0.999), eps=1e-8, weight_decay=c['weight_decay'])

    with torch.no_grad():
        t_out = teacher_head(teacher(globals_))  # [2B, K]
    s_out = torch.cat([student_head(student(globals_)), student_head(student(locals_))])  # [4B, K]
    loss = dino_loss(s_out, t_out, center, 4, c['teacher_temp'], c['student_temp'])
    opt.zero_grad()
    loss.backward()
    grad_norms, clipped = {}, []
    for n, p in named:
        norm = p.grad.norm(2).item()
        grad_norms[n] = norm
        coef = c['clip'] / (norm + 1e-6)
        if coef < 1:
            p.grad.mul_(coef)
            clipped.append(n)
    assert 0 < len(clipped) < len(named), f'clip {c["clip"]} must clip some gradients but not all: {clipped}'
    opt.step()
    with torch.no_grad():
        for ps, pt in zip(list(student.parameters()) + list(student_head.parameters()),
                          list(teacher.parameters()) + list(teacher_head.parameters())):
            pt.mul_(c['momentum']).add_((1 - c['momentum']) * ps.detach())
        center_after = center * c['center_momentum'] + (1 - c['center_momentum']) * t_out.mean(0, keepdim=True)

    def kept(sd, prefix='', only=lambda k: True):
        return {prefix + k: v.detach().clone().contiguous() for k, v in sd.items()
                if not k.endswith('num_batches_tracked') and only(k)}

    save_file({'globals': globals_, 'locals': locals_, 'center': center[0].contiguous(),
               'center_after': center_after[0].contiguous()}, os.path.join(OUT, 'dino_step.io.safetensors'))
    save_file(head_before, os.path.join(OUT, 'dino_step.head.safetensors'))
    save_file({**kept(student.state_dict()), **kept(student_head.state_dict(), 'head.')},
              os.path.join(OUT, 'dino_step.student_after.safetensors'))
    # The teacher's backbone parameters are m * before + (1 - m) * the student's after; only its
    # own running statistics (from its train-mode forward) are stored.
    save_file({**kept(teacher.state_dict(), only=lambda k: 'running' in k), **kept(teacher_head.state_dict(), 'head.')},
              os.path.join(OUT, 'dino_step.teacher_after.safetensors'))
    with open(os.path.join(OUT, 'dino_step.json'), 'w') as f:
        json.dump({'loss': loss.item(), **c, 'backbone': 'resnet_basic', 'grad_norms': grad_norms,
                   'clipped': clipped}, f, indent=2)
    print(f'dino step loss {loss.item():.6f}; clipped {len(clipped)} of {len(named)} gradients: {clipped}')


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--full', action='store_true')
    p.add_argument('--check-export')
    p.add_argument('--model')
    p.add_argument('--dino-only', action='store_true')
    a = p.parse_args()
    torch.set_num_threads(2)
    if a.dino_only:
        dino_step()
        sys.exit(0)
    if a.check_export:
        model = CASES[a.model][0]()
        sd = load_file(a.check_export)
        model.load_state_dict(sd, strict=True)
        ref = load_file(os.path.join(OUT, f'{a.model}.safetensors'))
        same = all(torch.equal(sd[k], ref[k]) for k in ref)
        print(json.dumps({'loaded_strict': True, 'identical_to_fixture': same, 'tensors': len(sd)}))
        sys.exit(0)

    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(77)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    models = {}
    for name, (build, cfg) in CASES.items():
        torch.manual_seed(100 + list(CASES).index(name))
        model = build()
        randomise_norms(model, gen)
        write_case(name, model, cfg, x)
        models[name] = model

    # The 32 px ViT's weights at 48 px: timm resamples pos_embed (bicubic, antialiased).
    from timm.layers import resample_abs_pos_embed
    vit48 = VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
    sd = dict(models['vit_tiny'].state_dict())
    sd['pos_embed'] = resample_abs_pos_embed(sd['pos_embed'], [6, 6], [4, 4], num_prefix_tokens=1)
    vit48.load_state_dict(sd)
    vit48.eval()
    x48 = torch.randn(2, 3, 48, 48, generator=gen)
    with torch.no_grad():
        save_file({'input': x48, 'logits': vit48(x48).contiguous(), 'pos_embed': sd['pos_embed'].contiguous()},
                  os.path.join(OUT, 'vit_tiny_at48.io.safetensors'))

    # One CASS training step from these weights (BatchNorm in train mode, no augmentation).
    cnn, vit = models['resnet_basic'], models['vit_tiny']
    loss, (g_cnn, g_vit) = cass_step(cnn, vit, x)
    save_file(g_cnn, os.path.join(OUT, 'cass_step.cnn_grads.safetensors'))
    save_file(g_vit, os.path.join(OUT, 'cass_step.vit_grads.safetensors'))
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, os.path.join(OUT, 'cass_step.cnn_after.safetensors'))
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, os.path.join(OUT, 'cass_step.vit_after.safetensors'))
    with open(os.path.join(OUT, 'cass_step.json'), 'w') as f:
        json.dump({'loss': loss, 'lr': 1e-3, 'cnn': 'resnet_basic', 'vit': 'vit_tiny'}, f, indent=2)
    print(f'cass step loss {loss:.6f}')

    dino_step()

    if a.full:
        full_check()


def full_check():
    """Full-size parity on demand: timm resnet50 and vit_base_patch16_384, random weights."""
    import timm
    root = os.path.join(HERE, '..')
    # Build once with the workspace's feature set (shared with the test and addon builds).
    subprocess.run(['cargo', 'build', '--workspace', '--target', HOST, '--example', 'parity_check'], cwd=root, check=True)
    target = os.environ.get('CARGO_TARGET_DIR', os.path.join(root, 'target'))
    binary = os.path.join(target, HOST, 'debug', 'examples', 'parity_check')
    with tempfile.TemporaryDirectory() as tmp:
        gen = torch.Generator().manual_seed(5)
        for name, model, cfg, size in [
            ('resnet50', timm.create_model('resnet50'), {'kind': 'resnet', 'block': 'Bottleneck', 'layers': [3, 4, 6, 3], 'base_width': 64, 'num_classes': 1000}, 224),
            ('vit_base_patch16_384', timm.create_model('vit_base_patch16_384'), {'kind': 'vit', 'image_size': 384, 'patch_size': 16, 'embed_dim': 768, 'depth': 12, 'num_heads': 12, 'num_classes': 1000}, 384),
        ]:
            randomise_norms(model, gen)
            model.eval()
            x = torch.randn(2, 3, size, size, generator=gen)
            with torch.no_grad():
                logits, feats = model(x), features(model, x)
            base = os.path.join(tmp, name)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, base + '.safetensors')
            save_file({'input': x, 'logits': logits.contiguous(), 'features': feats.contiguous()}, base + '.io.safetensors')
            with open(base + '.json', 'w') as f:
                json.dump(cfg, f)
            out = subprocess.run([binary, base], cwd=root, capture_output=True, text=True)
            print(name, out.stdout.strip() or out.stderr[-2000:])


if __name__ == '__main__':
    main()
