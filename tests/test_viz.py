"""minimm.viz: the graph as DOT text (and drawn), saliency and Grad-CAM gradients against
finite differences on tiny float64 models, attention maps, the reliability diagram."""
import re
from collections import Counter

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn, viz


def functions_in(dot):
    """Function boxes of a DOT text, counted by name."""
    return Counter(re.findall(r'f\d+ \[label="(\w+)", shape=box', dot))


def test_graph_of_an_expression():
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    w = mm.tensor([0.5, -1.0], requires_grad=True)
    a = x * w
    L = (F.tanh(a) + a).sum()
    dot = viz.graph_dot(L, names={"x": x, "w": w, "L": L})
    assert dot.startswith('digraph "minimm" {') and dot.rstrip().endswith("}")
    assert functions_in(dot) == Counter({"Mul": 1, "Tanh": 1, "Add": 1, "Sum": 1})
    # 5 tensors: x, w, a, tanh(a), a + tanh(a), L -> 6; a is one node with two consumers
    tensors = re.findall(r"(t\d+) \[label=", dot)
    assert len(tensors) == 6
    assert 'label="x\\n2"' in dot and 'label="L\\nscalar"' in dot
    edges = re.findall(r"(\w+) -> (\w+);", dot)
    assert len(edges) == 4 + 6          # one per Function output, one per input slot
    mul, = re.findall(r'(f\d+) \[label="Mul"', dot)
    mul_out = [b for a_, b in edges if a_ == mul]
    assert len(mul_out) == 1
    consumers_of_a = [b for a_, b in edges if a_ == mul_out[0]]
    assert len(consumers_of_a) == 2     # Tanh and Add both read a


def test_graph_of_one_lstm_step():
    rng = np.random.default_rng(0)
    x, h, c = (mm.tensor(rng.standard_normal(s)) for s in ((2, 3), (2, 4), (2, 4)))
    W, U, b = (mm.tensor(rng.standard_normal(s), requires_grad=True)
               for s in ((3, 16), (4, 16), (16,)))
    h2, c2 = F.lstm_cell(x, h, c, W, U, b)
    dot = viz.graph_dot(h2, c2, names={"x_t": x, "h_{t-1}": h, "c_{t-1}": c, "W": W, "U": U,
                                       "b": b, "h_t": h2, "c_t": c2})
    # z = xW + hU + b (2 MatMul, 2 Add), split into 4 gates, σ for i f o, tanh for g and c_t,
    # c_t = f⊙c + i⊙g (2 Mul, 1 Add), h_t = o⊙tanh(c_t) (1 Mul)
    assert functions_in(dot) == Counter({"MatMul": 2, "Add": 3, "Split": 1, "Sigmoid": 3,
                                         "Tanh": 2, "Mul": 3})
    for name in ("x_t", "W", "U", "b", "h_t", "c_t", "c_{t-1}"):
        assert f'label="{name}\\n' in dot
    assert dot.count("penwidth=2.5") == 2            # the two outputs are drawn bold


def test_graph_needs_tensors():
    with pytest.raises(TypeError, match="graph_dot: expected one or more Tensors"):
        viz.graph_dot(np.ones(3))


def test_draw_graph_matplotlib_has_one_label_per_node():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    y = (F.exp(x) * x).sum()
    fig = viz.draw_graph(y, names={"x": x}, engine="matplotlib")
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text()]
    assert sorted(t for t in texts if t in ("Exp", "Mul", "Sum")) == ["Exp", "Mul", "Sum"]
    assert len(texts) == 3 + 4                       # 3 Functions, 4 tensors (x, e^x, x e^x, y)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_draw_graph_graphviz_renders_svg():
    if not viz.graphviz_available():
        pytest.skip("graphviz (Python package and the dot program) not installed")
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    src = viz.draw_graph(F.tanh(x).sum(), names={"x": x}, engine="graphviz")
    svg = src.pipe(format="svg").decode()
    assert "<svg" in svg and ">Tanh<" in svg and ">Sum<" in svg


def test_graphviz_engine_without_graphviz_says_what_to_install(monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    assert not viz.graphviz_available()
    x = mm.tensor([1.0], requires_grad=True)
    with pytest.raises(ImportError, match="pip install graphviz"):
        viz.draw_graph(x * 2, engine="graphviz")
    with pytest.raises(ValueError, match="engine must be"):
        viz.draw_graph(x * 2, engine="svg")


# -- saliency and Grad-CAM ----------------------------------------------------------------------
def tiny_cnn(seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 4, 3, rng=rng))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


def central_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):            # a test oracle: one element at a time
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def score_of(forward, target):
    def f(x):
        with mm.no_grad():
            logits = forward(mm.tensor(x)).numpy()
        return logits[np.arange(len(target)), target].sum()
    return f


def test_saliency_is_the_input_gradient_of_the_target_score():
    model = tiny_cnn()
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 4))
    target = np.array([2, 0])
    out = viz.saliency(model, x, target)
    expected = central_difference(score_of(model, target), x)
    assert out["gradient"].shape == x.shape and out["map"].shape == (2, 5, 4)
    np.testing.assert_allclose(out["gradient"], expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out["map"], np.abs(expected).max(axis=1), rtol=1e-5, atol=1e-8)
    # each sample's gradient is its own score's: another target for sample 1 changes only it
    other = viz.saliency(model, x, np.array([2, 1]))["gradient"]
    np.testing.assert_array_equal(other[0], out["gradient"][0])
    assert not np.allclose(other[1], out["gradient"][1])


def test_gradcam_gradients_weights_and_map():
    model = tiny_cnn(2)
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 4))
    target = np.array([1, 2])
    layer = viz.last_conv_features(model)
    assert layer is model[3]                         # the ReLU after the last convolution
    out = viz.gradcam(model, x, target, layer)
    with mm.no_grad():
        A = model[3](model[2](model[1](model[0](mm.tensor(x))))).numpy()
    np.testing.assert_allclose(out["activations"], A)
    tail = nn.Sequential(model[4], model[5])        # the network after the feature maps
    dA = central_difference(score_of(tail, target), A)
    np.testing.assert_allclose(out["gradients"], dA, rtol=1e-5, atol=1e-8)
    alpha = dA.mean(axis=(2, 3))
    np.testing.assert_allclose(out["weights"], alpha, rtol=1e-5, atol=1e-8)
    cam = np.zeros((2, 5, 4))
    for n in range(2):
        for k in range(4):
            cam[n] += alpha[n, k] * A[n, k]
    cam = np.maximum(cam, 0)
    np.testing.assert_allclose(out["cam_raw"], cam, rtol=1e-5, atol=1e-8)
    # same size in and out: the upsampling is the identity; then each map scaled to max 1
    peak = cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out["cam"], np.where(peak > 0, cam / np.where(peak > 0, peak, 1),
                                                    0), rtol=1e-5, atol=1e-8)
    assert "forward" not in layer.__dict__          # the capture was undone


def test_gradcam_rejects_a_layer_forward_never_calls():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="was not called"):
        viz.gradcam(model, np.zeros((1, 2, 5, 4)), [0], nn.ReLU())
    with pytest.raises(ValueError, match="target must hold 1 class ids in 0..2"):
        viz.saliency(model, np.zeros((1, 2, 5, 4)), [3])
    with pytest.raises(TypeError, match="normalise uint8"):
        viz.saliency(model, np.zeros((1, 2, 5, 4), np.uint8), [0])


def test_upsample_bilinear_matches_torch_align_corners_false():
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(0).standard_normal((3, 2, 4))
    ours = viz.upsample_bilinear(maps, (32, 13))
    ref = torch.nn.functional.interpolate(torch.tensor(maps)[:, None], size=(32, 13),
                                          mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_upsample_bilinear_hand_example():
    # 1×2 -> 1×4: centres of the outputs at -0.25, 0.25, 0.75, 1.25 in input pixels, clamped
    out = viz.upsample_bilinear(np.array([[[0.0, 4.0]]]), (1, 4))
    np.testing.assert_allclose(out, [[[0.0, 1.0, 3.0, 4.0]]])


# -- attention ----------------------------------------------------------------------------------
class ClsAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiHeadAttention(8, 2, rng=np.random.default_rng(0))

    def forward(self, x):
        return self.attn(x, x, x)


def test_attention_weights_and_the_cls_row():
    model = ClsAttention()
    assert viz.attention_weights(model) == {}
    x = mm.tensor(np.random.default_rng(1).standard_normal((3, 5, 8)), dtype=np.float32)
    model(x)
    found = viz.attention_weights(model)
    assert list(found) == ["attn"] and found["attn"].shape == (3, 2, 5, 5)
    w = found["attn"]
    cls = viz.query_attention(w)                              # query 0, heads averaged
    np.testing.assert_allclose(cls, (w[:, 0, 0] + w[:, 1, 0]) / 2, rtol=1e-6)
    np.testing.assert_allclose(cls.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(viz.query_attention(w, 2, heads=1), w[:, 1, 2])
    np.testing.assert_array_equal(viz.query_attention(w, heads="max"), w[:, :, 0].max(axis=1))
    assert viz.query_attention(w, heads=None).shape == (3, 2, 5)
    # the weights of F.scaled_dot_product_attention have no head axis
    np.testing.assert_array_equal(viz.query_attention(w[:, 0], 1), w[:, 0, 1])
    with pytest.raises(ValueError, match="query 7 out of range"):
        viz.query_attention(w, 7)
    with pytest.raises(ValueError, match="heads must be"):
        viz.query_attention(w, heads=5)


def test_reliability_diagram_draws_one_bar_per_filled_bin():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minimm import metrics
    P = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    bins = metrics.reliability_bins(np.array([0, 1, 1]), P, 5)
    fig = viz.plot_reliability_diagram(bins)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches[:3])
    assert heights == [0.0, 1.0, 1.0]                # accuracies of the 3 filled bins
    assert ax.get_xlabel().startswith("confidence")
    plt.close(fig)


def test_saliency_of_a_two_head_model_reads_the_class_head():
    model = tiny_cnn()
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 4))
    both = viz.saliency(lambda t: (model(t), model(t) * 0.0), x, [1])
    np.testing.assert_allclose(both["gradient"], viz.saliency(model, x, [1])["gradient"])
