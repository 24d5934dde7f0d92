"""titans: the titans inference engine (Titans neural-memory models) from Python.

    import titans
    model = titans.Model.load("model.safetensors")
    session = titans.Session(model, threads=2)
    logits = session.forward([1, 2, 3])               # float32 [3, V]
    for token in session.generate([1, 2, 3], max_new_tokens=16, temperature=0.8, seed=1):
        print(token)

The classes come from the compiled extension titans._titans, which binds the C++ API
(include/titans/*.hpp); docs/PYTHON.md documents them. titans.torch is the PyTorch training twin
and titans.convert the titans-pytorch converter: both import torch, and only when imported
(`import titans` does not).
"""
from __future__ import annotations

try:
    from ._titans import (
        ConfigError,
        Error,
        ErrorCode,
        FormatError,
        Generator,
        InvalidArgumentError,
        IoError,
        MemorySession,
        MismatchError,
        Model,
        NeuralMemory,
        NumericalError,
        Session,
        SessionOptions,
        __version__,
    )
except ModuleNotFoundError as e:
    # A source checkout without the built extension (python/ on sys.path, as tests/python and
    # tools/convert_titans_pytorch.py put it): titans.torch and titans.convert's file functions
    # work; using the engine raises the ImportError below.
    if e.name != f"{__name__}._titans":
        raise
    _missing_extension = e

    def __getattr__(name):
        if name not in __all__ or name == "convert_titans_pytorch":
            raise AttributeError(f"module 'titans' has no attribute {name!r}")
        raise ImportError(f"titans.{name}: the extension titans._titans is not built here "
                          f"({__path__[0]}); install the package: pip install ./python "
                          f"(docs/PYTHON.md)") from _missing_extension


def convert_titans_pytorch(module_or_state_dict, kwargs=None, **options):
    """Converts a titans-pytorch NeuralMemory or MemoryAsContextTransformer (the module, or its
    state_dict with `kwargs`, its constructor arguments) into a titans.NeuralMemory or
    titans.Model in this process; options: cls, prefix, ttt_batch_size, path (also write the
    engine file). Imports torch and titans-pytorch (titans.convert has the details)."""
    from .convert import convert_titans_pytorch as convert

    return convert(module_or_state_dict, kwargs, **options)


__all__ = [
    "ConfigError", "Error", "ErrorCode", "FormatError", "Generator", "InvalidArgumentError",
    "IoError", "MemorySession", "MismatchError", "Model", "NeuralMemory", "NumericalError",
    "Session", "SessionOptions", "convert_titans_pytorch",
]
