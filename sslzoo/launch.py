"""``sslzoo train ... --nproc N``: start N processes through torchrun on this machine."""
from __future__ import annotations


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``torchrun --standalone --nproc_per_node=N -m sslzoo <argv without --nproc>``."""
    from torch.distributed.run import main as torchrun

    args, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    try:
        torchrun(["--standalone", f"--nproc_per_node={nproc}", "-m", "sslzoo", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # torchrun raises ChildFailedError with the failing rank
        print(f"error: a training process failed: {exc}")
        return 1
    return 0
