"""Every registered model: forward/backward, parameter counts the papers state, constraints, weights."""

from __future__ import annotations

import pytest
import torch

from trainables.models import (
    ModelConfigError,
    WeightsNotFound,
    check_model,
    count_parameters,
    create_model,
    list_models,
)

REGISTERED = [m for m in list_models() if "/" not in m]


@pytest.mark.parametrize("name", REGISTERED + ["timm/resnet10t", "tv/resnet18"])
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
    assert {"cnn", "vit", "resnet18", "coins_cnn", "luna"} <= set(REGISTERED)


def test_coins_cnn_paper000_parameter_count():
    # Paper 000's selected values at 256x256 with one BCE logit: 849,331 parameters (their Appendix A1).
    m = create_model(
        "coins_cnn",
        num_classes=1,
        in_chans=3,
        image_size=256,
        out_channels_1=20,
        out_channels_2=10,
        kernel_size_conv=5,
        padding_conv=0,
        stride_conv=1,
        kernel_size_pool=4,
        stride_pool=3,
        fnn_out_features=500,
    )
    assert count_parameters(m) == 849_331
    assert m(torch.zeros(2, 3, 256, 256)).shape == (2, 1)
    assert "feature maps vanish" in check_model(
        "coins_cnn", num_classes=1, in_chans=3, image_size=32, stride_conv=3, stride_pool=5, kernel_size_pool=4
    )


def test_luna_paper001_parameter_count():
    assert count_parameters(create_model("luna", num_classes=2, in_chans=3, image_size=288)) == 115_088
    assert count_parameters(create_model("luna", num_classes=2, in_chans=3, image_size=224)) == 98_704


def test_torchvision_models_replace_the_classifier(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    m = create_model("tv/alexnet", num_classes=2, in_chans=3, image_size=224)
    assert m.classifier[-1].out_features == 2 and count_parameters(m) == 57_012_034  # paper 001: 57.0 M
    with pytest.raises(WeightsNotFound, match="not in the torch.hub cache"):
        create_model("tv/alexnet", num_classes=2, in_chans=3, image_size=224, pretrained=True)
    src = alexnet(weights=None)
    torch.save(src.state_dict(), tmp_path / "a.pth")
    m = create_model("tv/alexnet", num_classes=2, in_chans=3, image_size=224, pretrained=str(tmp_path / "a.pth"))
    assert torch.equal(m.features[0].weight, src.features[0].weight)
    with pytest.raises(KeyError, match="torchvision has no"):
        create_model("tv/notamodel", num_classes=2, in_chans=3, image_size=224)


def test_vit_paper003_parameter_count():
    m = create_model(
        "vit", num_classes=10, in_chans=3, image_size=32, patch_size=4, embed_dim=256, mlp_dim=512, num_heads=8, depth=6
    )
    assert count_parameters(m) == 3_195_146


def test_resnet18_parameter_counts():
    assert (
        count_parameters(create_model("resnet18", num_classes=10, in_chans=3, image_size=32, stem="imagenet"))
        == 11_181_642
    )  # paper 003, Table 4.1
    assert (
        count_parameters(create_model("resnet18", num_classes=10, in_chans=3, image_size=32, stem="cifar"))
        == 11_173_962
    )


def test_vit_head_dim_decouples_attention_width():
    # Paper 004's best ViT: embed 32 with 20 heads of 16 (inner width 320 != 32).
    m = create_model(
        "vit",
        num_classes=10,
        in_chans=3,
        image_size=32,
        patch_size=2,
        embed_dim=32,
        depth=4,
        num_heads=20,
        head_dim=16,
        mlp_dim=1024,
        head_hidden=1024,
    )
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.blocks[0].attn.qkv.out_features == 3 * 320


def test_vit_small_data_options_keep_the_token_grid():
    # Conv tokenizer at patch 4: two conv-pool stages give the same 8 x 8 grid; sequence pooling has no class
    # token, so the position embedding has 64 rows, not 65.
    m = create_model(
        "vit",
        num_classes=10,
        in_chans=3,
        image_size=32,
        patch_size=4,
        embed_dim=64,
        depth=3,
        num_heads=4,
        mlp_dim=128,
        tokenizer="conv",
        pool="seq",
        drop_path=0.1,
    )
    assert m.pos_embed.shape == (1, 64, 64) and not hasattr(m, "cls_token")
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.patch_embed) == 2
    assert [b.drop_path for b in m.blocks] == [0.0, 0.05, 0.1]
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    assert torch.equal(m(x), m(x))  # stochastic depth is off in eval
    m.train()
    torch.manual_seed(0)
    assert m(x).shape == (4, 10)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    from trainables.models._vit_layers import drop_path

    torch.manual_seed(0)
    x = torch.ones(20000, 3, 2)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.flatten(1)
    assert per_sample.unique().tolist() == pytest.approx([0.0, 4 / 3])  # all or nothing per sample, rescaled
    assert (per_sample == per_sample[:, :1]).all()
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_the_cpu_attention_is_torchs_fused_attention():
    # the CPU takes the plain product (faster in bf16 there): the same function of q, k and v, and its dropout
    # drops weights as the fused kernel's does, keeping their expectation
    import torch.nn.functional as F

    from trainables.models._vit_layers import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(attention(q, k, v, 0.0), F.scaled_dot_product_attention(q, k, v), atol=1e-10)
    ones = torch.ones(1, 1, 64, 1, dtype=torch.float64)
    dropped = torch.stack([attention(q[:1, :1], k[:1, :1], ones, 0.5) for _ in range(400)])
    assert ((dropped - 1.0).abs().mean() > 0.1) and abs(dropped.mean().item() - 1.0) < 0.02


@pytest.mark.parametrize(
    "args,needle",
    [
        (dict(embed_dim=48, num_heads=5), "embed_dim must be divisible by num_heads"),
        (dict(tokenizer="conv", patch_size=1), "power of 2"),
        # a key's own values and range are its type's in the builder's signature (a spec's value is checked against
        # the same type before any trial, in the spec's words: tests/test_spec.py)
        (dict(tokenizer="linear"), "tokenizer='linear': Input should be 'patch' or 'conv'"),
        (dict(pool="mean"), "pool='mean': Input should be 'cls' or 'seq'"),
        (dict(drop_path=1.0), "drop_path=1.0: Input should be less than 1"),
        (dict(patch_size=5), "patch_size must divide image_size"),
        (dict(dropout=1.0), "dropout=1.0: Input should be less than 1"),
        (dict(depth=0), "depth=0: Input should be greater than or equal to 1"),
    ],
)
def test_vit_constraints(args, needle):
    args = {"image_size": 32, **args}
    reason = check_model("vit", num_classes=10, in_chans=3, **args)
    assert reason and needle in reason
    with pytest.raises(ModelConfigError, match=needle):
        create_model("vit", num_classes=10, in_chans=3, **args)


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
    m = create_model(
        "resnet18", num_classes=5, in_chans=3, image_size=32, stem="imagenet", pretrained=str(tmp_path / "r18.pth")
    )
    assert torch.equal(m.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert m.fc.out_features == 5
    timm_src = create_model("timm/resnet10t", num_classes=1000, in_chans=3, image_size=32)
    from safetensors.torch import save_file

    save_file(timm_src.state_dict(), str(tmp_path / "r10.safetensors"))
    t = create_model(
        "timm/resnet10t", num_classes=3, in_chans=3, image_size=32, pretrained=str(tmp_path / "r10.safetensors")
    )
    assert torch.equal(t.layer1[0].conv1.weight, timm_src.layer1[0].conv1.weight)
