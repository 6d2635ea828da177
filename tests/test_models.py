"""Every registered model: forward/backward, parameter counts the papers state, constraints, weights."""

from __future__ import annotations

import pytest
import torch

from trainables.models import (ModelConfigError, WeightsNotFound, check_model, count_parameters, create_model,
                               list_models)

REGISTERED = [m for m in list_models() if not m.startswith("timm/")]


@pytest.mark.parametrize("name", REGISTERED + ["timm/resnet10t"])
def test_forward_backward(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_chans=3, image_size=32)
    x = torch.randn(4, 3, 32, 32)
    out = m(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_registry_lists_the_issue_models():
    assert {"cnn", "vit", "resnet18"} <= set(REGISTERED)


def test_vit_paper003_parameter_count():
    m = create_model("vit", num_classes=10, in_chans=3, image_size=32, patch_size=4, embed_dim=256,
                     mlp_dim=512, num_heads=8, depth=6)
    assert count_parameters(m) == 3_195_146


def test_resnet18_parameter_counts():
    assert count_parameters(create_model("resnet18", num_classes=10, in_chans=3, image_size=32,
                                         stem="imagenet")) == 11_181_642  # paper 003, Table 4.1
    assert count_parameters(create_model("resnet18", num_classes=10, in_chans=3, image_size=32,
                                         stem="cifar")) == 11_173_962


def test_vit_head_dim_decouples_attention_width():
    # Paper 004's best ViT: embed 32 with 20 heads of 16 (inner width 320 != 32).
    m = create_model("vit", num_classes=10, in_chans=3, image_size=32, patch_size=2, embed_dim=32, depth=4,
                     num_heads=20, head_dim=16, mlp_dim=1024, head_hidden=1024)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.blocks[0].attn.qkv.out_features == 3 * 320


@pytest.mark.parametrize("args,needle", [
    (dict(embed_dim=48, num_heads=5), "embed_dim must be divisible by num_heads"),
    (dict(patch_size=5), "patch_size must divide image_size"),
    (dict(dropout=1.0), "0 <= dropout < 1"),
])
def test_vit_constraints(args, needle):
    reason = check_model("vit", num_classes=10, in_chans=3, image_size=32, **args)
    assert reason and needle in reason
    with pytest.raises(ModelConfigError, match=needle):
        create_model("vit", num_classes=10, in_chans=3, image_size=32, **args)


def test_cnn_constraints():
    assert "image_size >= 8" in check_model("cnn", num_classes=2, in_chans=3, image_size=4)
    assert check_model("cnn", num_classes=2, in_chans=3, image_size=8) is None


def test_missing_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFound, match="not in the local cache"):
        create_model("resnet18", num_classes=10, in_chans=3, image_size=32, pretrained=True)
    with pytest.raises(WeightsNotFound, match="does not exist"):
        create_model("resnet18", num_classes=10, in_chans=3, image_size=32, pretrained=str(tmp_path / "x.pth"))
    with pytest.raises(WeightsNotFound, match="does not exist"):
        create_model("timm/resnet10t", num_classes=10, in_chans=3, image_size=32, pretrained=str(tmp_path / "x.pth"))


def test_pretrained_from_file_loads_those_weights(tmp_path):
    from torchvision.models import resnet18

    src = resnet18(weights=None)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    m = create_model("resnet18", num_classes=5, in_chans=3, image_size=32, stem="imagenet",
                     pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(m.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert m.fc.out_features == 5
    timm_src = create_model("timm/resnet10t", num_classes=1000, in_chans=3, image_size=32)
    from safetensors.torch import save_file

    save_file(timm_src.state_dict(), str(tmp_path / "r10.safetensors"))
    t = create_model("timm/resnet10t", num_classes=3, in_chans=3, image_size=32,
                     pretrained=str(tmp_path / "r10.safetensors"))
    assert torch.equal(t.layer1[0].conv1.weight, timm_src.layer1[0].conv1.weight)
