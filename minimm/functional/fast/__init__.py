"""Fast kernels: the same operations as the readable ones in ``minimm.functional``, written
for speed on NumPy (and CuPy), each tested against its readable twin.

The readable kernels are what the chapters print and derive; these trade a little
readability for fewer passes over memory: one internal activation layout for the
convolution stack (:mod:`.conv`), the LSTM's steps with fewer array operations
(:mod:`.recurrent`), attention as one Function (:mod:`.attention`).
"""
