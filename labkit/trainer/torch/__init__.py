"""The trainer again, written with PyTorch: ``labkit train --framework torch``.

The same contract as the NumPy trainer (run folder, signals, atomic checkpoints, exact
resume), with what PyTorch users meet in real jobs: ``torch.save`` of state dicts, real
``torch.utils.data.DataLoader`` workers, and ranks started by ``torchrun`` that talk over
``torch.distributed`` (gloo). Needs the ``[torch]`` extra: ``pip install 'labkit[torch]'``
(the CPU build is enough). Nothing here is imported by ``import labkit``: torch takes
about 2 s to import (measured: ``python -c "import torch"``, torch 2.14.1).
"""
