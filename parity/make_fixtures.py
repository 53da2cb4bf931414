"""Parity fixtures: random-initialised timm models, their weights and their outputs on a fixed
batch, written as small safetensors files that the engine's tests load (no Python is needed to
run those tests). Also the reference for one CASS training step.

    python3 parity/make_fixtures.py            # writes crates/cass-core/fixtures/timm/
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--full', action='store_true')
    p.add_argument('--check-export')
    p.add_argument('--model')
    a = p.parse_args()
    torch.set_num_threads(2)
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
