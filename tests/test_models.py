"""Score networks: parameter counts of the reference configs (meta device), the presets, and the layers against
their closed-form definitions (FIR resampling as zero insertion + filtering, attention, embeddings, instance norm++)."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_f32

from pipeline.config import Params, load_params
from pipeline.models import fir
from pipeline.models import layers as L
from pipeline.models import zoo as models
from pipeline.models.refinenet import BoxFilter, InstanceNormPlus

ROOT = Path(__file__).resolve().parents[1]

NCSNPP_CONT = dict(name="ncsnpp", nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=4, attn_resolutions=[16], fir=True,
                   fir_kernel=[1, 3, 3, 1], skip_rescale=True, resblock_type="biggan", progressive="none",
                   progressive_input="residual", embedding_type="fourier", fourier_scale=16, scale_by_sigma=True)
DDPMPP = dict(NCSNPP_CONT, fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False)
NCSN = dict(name="ncsn", nf=128, num_scales=10, sigma_max=1.0, normalization="InstanceNorm++", nonlinearity="elu")
CIFAR = dict(image_size=32, num_channels=3)

# docs/papers.md §6: counts of the reference implementations (score_sde_pytorch, ermongroup/ncsn, ermongroup/ncsnv2)
REFERENCE_COUNTS = {
    "ncsn": (NCSN, CIFAR, True, 30_117_635),
    "ncsn_mnist": (dict(NCSN, nf=64), dict(image_size=28, num_channels=1), True, 7_638_657),
    "ncsnv2": (dict(NCSN, name="ncsnv2", num_scales=232, sigma_max=50.0, scale_by_sigma=True), CIFAR, True, 29_694_083),
    "ddpm": (dict(name="ddpm", nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16]), CIFAR, False, 35_218_947),
    "ncsnpp_cont": (NCSNPP_CONT, CIFAR, True, 62_758_915),
    "ncsnpp_cont_deep": (dict(NCSNPP_CONT, num_res_blocks=8), CIFAR, True, 107_587_075),
    "ncsnpp_discrete": (dict(NCSNPP_CONT, embedding_type="positional"), CIFAR, False, 62_693_251),
    "ddpmpp_cont": (DDPMPP, CIFAR, True, 61_804_419),
    "ddpmpp_cont_deep": (dict(DDPMPP, num_res_blocks=8), CIFAR, True, 106_632_579),
}

PRESET_COUNTS = {
    "ncsn": 30_117_635, "ncsnv2": 29_694_083, "ddpm": 35_218_947, "ncsnpp": 62_693_251, "ncsnpp_cont": 62_758_915,
    "ncsnpp_cont_deep": 107_587_075, "ddpmpp": 61_804_419, "ddpmpp_cont_vp": 61_804_419, "ddpmpp_cont_deep_vp": 106_632_579,
    "ddpmpp_cont_subvp": 61_804_419, "ddpmpp_cont_deep_subvp": 106_632_579,
}


def make_params(model: dict, data: dict, continuous: bool = True, sde: str = "vesde") -> Params:
    return Params(model=model, data=data, training={"continuous": continuous, "sde": sde})


def meta_count(params: Params) -> int:
    with torch.device("meta"):
        return models.count_parameters(models.build(params))


def test_registry_names():
    assert {"ddpm", "ncsn", "ncsnv2", "ncsnpp"} <= set(models.names())


@pytest.mark.parametrize("case", list(REFERENCE_COUNTS))
def test_parameter_count_matches_reference(case):
    model, data, continuous, expected = REFERENCE_COUNTS[case]
    assert meta_count(make_params(model, data, continuous)) == expected


@pytest.mark.parametrize("name", list(PRESET_COUNTS))
def test_cifar10_preset_validates_and_has_reference_count(name):
    exp, params = load_params(ROOT / "params" / "cifar10" / f"{name}.yaml")
    assert exp == name and params.data.dataset == "cifar10" and params.eval.num_samples == 50_000
    assert meta_count(params) == PRESET_COUNTS[name]


# --- FIR resampling against its definition (StyleGAN2 upfirdn2d): zero insertion, padding, filtering, subsampling


def upfirdn_by_definition(x, k2d, up, down, pad0, pad1):
    """The slow textbook form: insert up-1 zeros after each pixel, pad, convolve with k2d, keep every down-th pixel."""
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, (pad0, pad1, pad0, pad1))
    kernel = k2d.flip(0, 1)[None, None].expand(c, 1, *k2d.shape).to(x.dtype)  # convolution = correlation with flip
    return F.conv2d(z, kernel, groups=c)[:, :, ::down, ::down]


@pytest.mark.parametrize("k", [[1, 3, 3, 1], [1, 2, 1], [1, 1], [1, 2, 3, 4]])
def test_fir_resampling_equals_zero_insertion_and_filtering(k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    p = len(k) - 2
    up = upfirdn_by_definition(x, fir.fir_kernel_2d(k, 4).double(), 2, 1, (p + 1) // 2 + 1, p // 2)
    down = upfirdn_by_definition(x, fir.fir_kernel_2d(k).double(), 1, 2, (p + 1) // 2, p // 2)
    assert fir.upsample_2d(x, k).shape == (2, 3, 16, 16)
    torch.testing.assert_close(fir.upsample_2d(x, k), up, rtol=0, atol=1e-12)
    torch.testing.assert_close(fir.downsample_2d(x, k), down, rtol=0, atol=1e-12)


def test_fir_filters_keep_constant_images_constant_away_from_borders():
    x = torch.full((1, 1, 8, 8), 3.0, dtype=torch.float64)
    assert torch.allclose(fir.upsample_2d(x, [1, 3, 3, 1])[..., 2:-2, 2:-2], x.new_full((1, 1, 12, 12), 3.0))
    assert torch.allclose(fir.downsample_2d(x, [1, 3, 3, 1])[..., 1:-1, 1:-1], x.new_full((1, 1, 2, 2), 3.0))


@pytest.mark.parametrize("k", [[1, 3, 3, 1], [1, 2, 1]])
def test_fir_conv_equals_upsample_then_conv_and_conv_then_downsample(k):
    """Up: zero insertion + 3×3 correlation (full padding) + FIR; down: FIR + 3×3 correlation + subsampling."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    conv_up = fir.FIRConv2d(3, 5, 3, up=True, fir_kernel=k).double()
    conv_down = fir.FIRConv2d(3, 5, 3, down=True, fir_kernel=k).double()
    for conv in (conv_up, conv_down):
        torch.nn.init.normal_(conv.weight, generator=g)
        torch.nn.init.normal_(conv.bias, generator=g)
    p_up = len(k) - 2 - 2
    z = torch.zeros(2, 3, 16, 16, dtype=torch.float64)
    z[:, :, ::2, ::2] = x
    h = F.conv2d(F.pad(z[..., :15, :15], (2, 2, 2, 2)), conv_up.weight)  # (H-1)·2 + 3 = 2H+1 outputs
    expected_up = upfirdn_by_definition(h, fir.fir_kernel_2d(k, 4).double(), 1, 1, (p_up + 1) // 2 + 1, p_up // 2 + 1)
    torch.testing.assert_close(conv_up(x), expected_up + conv_up.bias.view(1, -1, 1, 1), rtol=0, atol=1e-12)
    p_down = len(k) - 2 + 2
    blurred = upfirdn_by_definition(x, fir.fir_kernel_2d(k).double(), 1, 1, (p_down + 1) // 2, p_down // 2)
    expected_down = F.conv2d(blurred, conv_down.weight)[:, :, ::2, ::2] + conv_down.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(conv_down(x), expected_down, rtol=0, atol=1e-12)


# --- layers against their formulas


def test_timestep_embedding_formula():
    labels = torch.tensor([0.0, 1.5, 999.0], dtype=torch.float64)
    emb = L.timestep_embedding(labels, 6, dtype=torch.float64)
    freqs = torch.tensor([10000 ** (-j / 2) for j in range(3)], dtype=torch.float64)
    torch.testing.assert_close(emb, torch.cat([torch.sin(labels[:, None] * freqs), torch.cos(labels[:, None] * freqs)], 1))
    assert L.timestep_embedding(labels, 7).shape == (3, 7) and L.timestep_embedding(labels, 7)[:, -1].abs().max() == 0


def test_gaussian_fourier_projection_formula_and_no_gradient():
    proj = L.GaussianFourierProjection(4, scale=16.0).double()
    assert not proj.W.requires_grad
    x = torch.tensor([math.log(0.5), math.log(20.0)], dtype=torch.float64)
    arg = 2 * math.pi * x[:, None] * proj.W[None]
    torch.testing.assert_close(proj(x), torch.cat([torch.sin(arg), torch.cos(arg)], 1))


def test_attention_block_is_softmax_attention_over_pixels():
    g = torch.Generator().manual_seed(2)
    block = L.AttnBlock(8, skip_rescale=True).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, generator=g)
    x = torch.randn(2, 8, 4, 4, generator=g, dtype=torch.float64)
    h = block.GroupNorm_0(x)
    q, k, v = (torch.einsum("bchw,cd->bdhw", h, nin.W) + nin.b[:, None, None] for nin in (block.NIN_0, block.NIN_1, block.NIN_2))
    w = torch.softmax(torch.einsum("bchw,bcij->bhwij", q, k).reshape(2, 4, 4, 16) / math.sqrt(8), -1).reshape(2, 4, 4, 4, 4)
    a = torch.einsum("bhwij,bcij->bchw", w, v)
    out = torch.einsum("bchw,cd->bdhw", a, block.NIN_3.W) + block.NIN_3.b[:, None, None]
    torch.testing.assert_close(block(x), (x + out) / math.sqrt(2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("skip_rescale", [True, False])
def test_residual_in_place_is_bit_identical_with_the_same_gradients(skip_rescale):
    """residual() writes (x + h)/√2 into the conv output h: the same bits and gradients as out of place."""
    g = torch.Generator().manual_seed(3)
    conv = L.conv3x3(4, 4)
    torch.nn.init.normal_(conv.weight, generator=g)
    x0 = torch.randn(2, 4, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    temb = torch.randn(2, 4, generator=g)
    grads = []
    for in_place in (True, False):
        x, t = x0.clone().requires_grad_(), temb.clone().requires_grad_()
        conv.zero_grad()
        h = conv(x)
        if in_place:
            h_ptr = h.data_ptr()
            out = L.residual(x, L.add_(h, t[:, :, None, None]), skip_rescale)
            assert out.data_ptr() == h_ptr  # no new activation
        else:
            h = h + t[:, :, None, None]
            out = (x + h) / L.SQRT2 if skip_rescale else x + h
        out.square().sum().backward()
        grads.append((out.detach(), x.grad, t.grad, conv.weight.grad.clone()))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_residual_keeps_type_promotion_and_broadcasting():
    """Out of place where in place would change the result: a bf16 conv output plus an fp32 skip stays fp32 (as x + h),
    and a term that broadcasts h to a bigger shape."""
    h, x = torch.ones(2, 3, 4, 4, dtype=torch.bfloat16), torch.full((2, 3, 4, 4), 1e-3)
    out = L.residual(x, h, skip_rescale=False)
    assert out.dtype == torch.float32 and torch.equal(out, x + h) and torch.equal(h, torch.ones_like(h))
    small, big = torch.ones(1, 3, 1, 1), torch.ones(2, 3, 4, 4)
    assert L.add_(small, big).shape == big.shape and torch.equal(small, torch.ones(1, 3, 1, 1))


@pytest.mark.parametrize("conditional", [True, False])
def test_instance_norm_plus_formula(conditional):
    """NCSN Eq. 10: γ (x − μ)/s + γ α (μ − mean μ)/sd μ + β, with per-channel means μ and biased instance std s."""
    g = torch.Generator().manual_seed(3)
    norm = InstanceNormPlus(5, num_classes=4 if conditional else None).double()
    for p in norm.parameters():
        torch.nn.init.normal_(p, generator=g)
    x = torch.randn(3, 5, 6, 6, generator=g, dtype=torch.float64) * 2 + 1
    y = torch.tensor([0, 3, 1])
    if conditional:
        gamma, alpha, beta = norm.embed.weight[y].chunk(3, -1)
    else:
        gamma, alpha, beta = (p.expand(3, 5) for p in (norm.gamma, norm.alpha, norm.beta))
    mu = x.mean((2, 3))
    s = x.var((2, 3), unbiased=False)
    mu_tilde = (mu - mu.mean(1, keepdim=True)) / torch.sqrt(mu.var(1, keepdim=True) + 1e-5)
    expected = gamma[..., None, None] * ((x - mu[..., None, None]) / torch.sqrt(s[..., None, None] + 1e-5)
                                         + alpha[..., None, None] * mu_tilde[..., None, None]) + beta[..., None, None]
    torch.testing.assert_close(norm(x, y), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_box_filter_is_the_5x5_mean_with_zero_padding_counted(layout):
    """NCSN's CRP pooling: BoxFilter (a depthwise convolution) against torch's AvgPool2d(5, 1, 2), values and
    gradients; float64 to rounding, float32 within a tolerance scaled to the values (another summation order)."""
    g = torch.Generator().manual_seed(5)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x = (torch.randn(3, 4, 9, 7, generator=g, dtype=dtype) * 10).contiguous(memory_format=layout)
        w = torch.randn(3, 4, 9, 7, generator=g, dtype=dtype)
        outs = []
        for pool in (torch.nn.AvgPool2d(5, 1, 2), BoxFilter()):
            xi = x.clone().requires_grad_()
            out = pool(xi)
            (out * w).sum().backward()
            outs.append((out.detach(), xi.grad))
        (a, ga), (b, gb) = outs
        torch.testing.assert_close(b, a, rtol=0, atol=tol * x.abs().max().item())
        torch.testing.assert_close(gb, ga, rtol=0, atol=tol * w.abs().max().item())
    corner = BoxFilter()(torch.ones(1, 1, 5, 5, dtype=torch.float64))[0, 0, 0, 0]
    assert corner.item() == pytest.approx(9 / 25, abs=1e-15)  # 3 x 3 ones in the window, the padding counted


# --- whole networks: shapes, grayscale, the σ scaling and the data-centering conventions

SMALL_NETS = {  # name: (model block, continuous training, channels, image size)
    "ncsnpp_cont": (dict(NCSNPP_CONT, nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[6]), True, 1, 12),
    "ncsnpp_skip": (dict(NCSNPP_CONT, nf=8, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[4], resblock_type="ddpm",
                         progressive="output_skip", progressive_input="input_skip", progressive_combine="cat",
                         embedding_type="positional", num_scales=10), False, 3, 16),
    "ddpmpp": (dict(DDPMPP, nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8]), True, 3, 16),
    "ddpm": (dict(name="ddpm", nf=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[], num_scales=10), False, 1, 8),
    "ncsn": (dict(NCSN, nf=4), False, 1, 28),
    "ncsnv2": (dict(NCSN, name="ncsnv2", nf=4, num_scales=10, scale_by_sigma=True), False, 3, 12),
}


def _labels(continuous, model):
    return torch.tensor([0.5, 7.0]) if continuous and model.get("embedding_type") == "fourier" else torch.tensor([0, 7])


@pytest.mark.parametrize("case", list(SMALL_NETS))
def test_output_shape_scale_by_sigma_and_centering(case):
    """net(x, σ) · σ equals the same weights without output scaling; data in [0, 1] enter as 2x − 1."""
    model, continuous, channels, size = SMALL_NETS[case]
    torch.manual_seed(0)
    data = dict(image_size=size, num_channels=channels, centered=False)
    params = make_params(dict(model, scale_by_sigma=True, dropout=0.0), data, continuous)
    net = models.build(params).eval()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, channels, size, size, generator=g)
    labels = _labels(continuous, model)
    sigma = labels if model.get("embedding_type") == "fourier" and continuous else net.sigmas[labels]
    with torch.no_grad():
        out = net(x, labels)
        assert out.shape == x.shape and out.is_contiguous() and torch.isfinite(out).all()  # standard layout out
        if case != "ncsnv2":  # ncsnv2 is defined with the σ scaling
            plain = models.build(make_params(dict(model, scale_by_sigma=False, dropout=0.0), data, continuous)).eval()
            plain.load_state_dict(net.state_dict())
            assert_close_f32(out * sigma.view(-1, 1, 1, 1), plain(x, labels), what=f"{case} scale_by_sigma")
        centered = models.build(make_params(dict(model, scale_by_sigma=True, dropout=0.0), dict(data, centered=True), continuous)).eval()
        centered.load_state_dict(net.state_dict())
        # float32 along two paths: rounding only, bounded by 1e-4 of max|y| (some of these random-init outputs are as
        # small as 6e-7, below any fixed atol such as 1e-5); a missing or doubled σ (0.03-50 here) or a skipped 2x - 1
        # changes the output by O(1) relative
        assert_close_f32(out, centered(2 * x - 1, labels), what=f"{case} centering")


def test_networks_train_one_step():
    """A gradient reaches every trainable parameter (no dead branch), and the Fourier W stays fixed."""
    model, continuous, channels, size = SMALL_NETS["ncsnpp_cont"]
    net = models.build(make_params(dict(model, dropout=0.0), dict(image_size=size, num_channels=channels), continuous))
    x = torch.randn(2, channels, size, size)
    net(x, torch.tensor([0.5, 7.0])).square().mean().backward()
    dead = [k for k, p in net.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().max() == 0)]
    assert not dead
    assert [k for k, p in net.named_parameters() if not p.requires_grad] == ["all_modules.0.W"]


@pytest.mark.parametrize("model,data,continuous,message", [
    (dict(name="ddpm", nf=48), CIFAR, False, "multiple of 32"),
    (dict(NCSNPP_CONT, nf=8), CIFAR, False, "training.continuous"),
    (dict(NCSNPP_CONT, nf=8, ch_mult=[1, 2, 2, 2]), dict(image_size=20, num_channels=3), True, "divisible"),
    (dict(NCSNPP_CONT, nf=8, normalization="InstanceNorm++"), CIFAR, True, "model.normalization"),
    (dict(NCSN, name="ncsnv2", nf=4, scale_by_sigma=False), CIFAR, False, "scale_by_sigma"),
    (dict(NCSN, nf=4), dict(image_size=15, num_channels=3), False, "even"),
    (dict(NCSN, nf=4, normalization="GroupNorm"), CIFAR, False, "InstanceNorm++"),
])
def test_unsupported_settings_fail_with_the_key(model, data, continuous, message):
    with pytest.raises(ValueError, match=message):
        models.build(make_params(model, data, continuous))
