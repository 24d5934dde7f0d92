"""The converter's command line (python -m titans convert, tools/convert_titans_pytorch.py).

A module of its own so that `--help` and command-line errors need neither torch nor
titans-pytorch: titans.convert, which imports both, is imported only to convert. Exit status:
0 written, 1 the files could not be read or written, 2 a malformed command line or an option
the engine does not reproduce (the message names each).
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert a titans-pytorch NeuralMemory or MemoryAsContextTransformer (its "
                    "state_dict and constructor arguments) into an engine file.")
    p.add_argument("--state-dict", required=True,
                   help="torch.save(module.state_dict()) file")
    p.add_argument("--kwargs", required=True,
                   help="JSON file: the constructor arguments")
    p.add_argument("--class", dest="cls", default="auto",
                   choices=("auto", "NeuralMemory", "MemoryAsContextTransformer"),
                   help="the module's class (auto: MemoryAsContextTransformer when the arguments "
                        "have num_tokens)")
    p.add_argument("--prefix", default="", help="key prefix of the memory in the state_dict "
                                                "(e.g. 'mem.'); other keys are ignored")
    p.add_argument("--ttt-batch-size", type=int, default=None,
                   help="NeuralMemory: the ttt_batch_size passed to forward(), if any")
    p.add_argument("--out", required=True, help="engine memory or model file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from importlib.metadata import version

    from . import convert as c  # torch and titans-pytorch, from here on

    try:  # the inputs: unreadable files, malformed JSON, a damaged or disallowed pickle
        with open(args.kwargs) as f:
            kwargs = json.load(f)
        state_dict = c.torch.load(args.state_dict, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        module = c.module_from_state_dict(state_dict, kwargs, args.cls, args.prefix)
        if isinstance(module, c.tp_nm.NeuralMemory):
            config = c.convert(module, args.out, args.ttt_batch_size)
        else:
            c._no_ttt_batch_size(args.ttt_batch_size)
            config = c.convert_mac(module, args.out)
    except c.UnsupportedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, TypeError, RuntimeError) as e:  # kwargs that do not fit, an unwritable out
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (titans-pytorch {version('titans-pytorch')}): {json.dumps(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
