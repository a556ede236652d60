"""Run a model with each parameter seen through a differentiable transform (tools layer).

Quantisation-aware training (:mod:`minimm.compress`) wants the layers to compute with
ŵ = fake_quantize(w); mixed precision (:mod:`minimm.amp`) wants them to compute with
ŵ = float16(w). In both cases the optimiser must keep updating the original float32
Parameter w, and the gradient must reach it through the graph of ŵ(w):

    with replaced_parameters(model, transform):
        loss = loss_fn(model(x))        # every layer reads ŵ = transform(name, w)
    loss.backward()                     # ∂L/∂w = ∂L/∂ŵ · ∂ŵ/∂w, into w.grad

Inside the block each module's attribute (``layer.W``) is the Tensor ŵ, a node of the graph
whose input is w; the registry behind ``parameters()`` and ``state_dict()`` still holds w,
and every attribute is put back when the block ends, even on an exception. (PyTorch reaches
the same end with ``torch.func.functional_call``.)
"""
import contextlib


@contextlib.contextmanager
def replaced_parameters(model, transform):
    """Inside the block, ``module.<name>`` is ``transform(qualified_name, parameter)`` (or the
    parameter itself where ``transform`` returns None). A parameter shared by two modules is
    transformed once."""
    saved, done = [], {}
    try:
        for mod_name, module in model.named_modules():
            for name, p in module._parameters.items():
                if p is None:
                    continue
                if id(p) not in done:
                    full = f"{mod_name}.{name}" if mod_name else name
                    done[id(p)] = transform(full, p)
                if done[id(p)] is not None:
                    saved.append((module, name, p))
                    # bypass Module.__setattr__: the registry must keep the Parameter
                    object.__setattr__(module, name, done[id(p)])
        yield model
    finally:
        for module, name, p in saved:
            object.__setattr__(module, name, p)
