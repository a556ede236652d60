"""The LSTM layer: the cell of ``minimm.functional.recurrent`` unrolled over time."""
import math

from .. import functional as F
from . import init
from .module import Module, Parameter


class LSTM(Module):
    """A single-layer, batch-first LSTM.

    Parameters (gate blocks in order i, f, g, o along the last axis):
        W (input_size, 4H), U (H, 4H), b (4H,), all drawn from U(±1/√H) as in PyTorch.
        (PyTorch keeps two biases, b_ih + b_hh; one b is the same model.)

    ``forward(x, state=None, lengths=None)`` with x of shape (B, T, input_size) returns
    ``(outputs, (h_T, c_T))``, outputs of shape (B, T, H). ``state`` is an initial ``(h_0, c_0)``
    (zeros when None). ``lengths`` (integers (B,), each in 0..T) marks sequences padded at the
    end: the state of sequence n stops changing after its step lengths[n], so (h_T, c_T) is
    the state at its own last valid step, and **outputs at padded steps are zero**.

    The forward runs as one fused Function (:func:`minimm.functional.lstm`); set
    ``fused=False`` to run the composed step-by-step graph instead (slower, same numbers).
    """

    def __init__(self, input_size, hidden_size, rng=None, fused=True):
        super().__init__()
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.fused = fused
        H = self.hidden_size
        bound = 1.0 / math.sqrt(H)
        self.W = Parameter(init.uniform((input_size, 4 * H), -bound, bound, rng))
        self.U = Parameter(init.uniform((H, 4 * H), -bound, bound, rng))
        self.b = Parameter(init.uniform((4 * H,), -bound, bound, rng))

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, batch_first=True"

    def forward(self, x, state=None, lengths=None):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"LSTM: expected input (B, T, {self.input_size}), got shape "
                             f"{tuple(x.shape)}")
        run = F.lstm if self.fused else F.lstm_simple
        return run(x, self.W, self.U, self.b, state, lengths)
