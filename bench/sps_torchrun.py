"""Benchmark: one training run over 1 and N torchrun processes: end-to-end env steps/s and the speedup.

Each measurement starts `torchrun --standalone --nproc-per-node N` on this file, which runs the training script in every
process under bench/sps.py's clock spies (random-weight CLIP, nothing downloaded); rank 0 reports. The run's --num-envs
are shared out over the processes, so each process steps, renders and scores num_envs/N envs per vector step. On a GPU
node every process has a GPU of its own; on a CPU the processes share its cores (torch threads: cores/N each), so
expect little there: the work is the same, only spread.

    python bench/sps_torchrun.py                                                            # CPU: ViT-B-32, 8 envs, 1 and 2
    python bench/sps_torchrun.py --clip-model ViT-bigG-14 --num-envs 32 --processes 1 2 4   # a node with 4 GPUs
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Optional

import tyro

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
from sps import SCRIPTS  # noqa: E402


@dataclass
class Args:
    clip_model: str = "ViT-B-32"
    """open_clip architecture, with random weights"""
    num_envs: int = 8
    """envs of the run, shared out over the processes"""
    processes: tuple[int, ...] = (1, 2)
    """numbers of torchrun processes to compare (the first is the reference)"""
    warmup: int = 5
    """vector steps before the clock starts"""
    steps: int = 20
    """timed vector steps"""
    scripts: tuple[str, ...] = tuple(SCRIPTS)
    """the training scripts to measure"""
    cuda: bool = True
    """one GPU per process, if there are GPUs"""
    threads: Optional[int] = None
    """torch threads per process; default: the CPU's cores shared out (1 gives each process a core of its own, as each
    would have a GPU of its own)"""


def measure_in_this_rank(task):
    """Under torchrun: run the script with the clock spies; rank 0 writes the run's env steps/s to task["out"]."""
    import clip_envs
    from sps import measure, random_clip_folder

    clip_envs.use_headless_mujoco_gl()
    args = SimpleNamespace(**task["args"])
    clock, _ = measure(task["script"], args, random_clip_folder(args.clip_model))
    stamps = clock["steps"][args.warmup - 1 : args.warmup + args.steps]
    if os.environ["RANK"] == "0":
        with open(task["out"], "w") as f:
            json.dump({"sps": args.steps * args.num_envs / (stamps[-1] - stamps[0])}, f)


def steps_per_second(script, processes, args):
    """Start one torchrun run of `script` over `processes` processes; returns its env steps/s."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "sps.json")
        task = {"script": script, "out": out, "args": asdict(args)}
        threads = args.threads or max(1, (os.cpu_count() or 1) // processes)  # on a CPU the processes share its cores
        env = dict(os.environ, VLMRM_BENCH_TASK=json.dumps(task), OMP_NUM_THREADS=str(threads))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", __file__]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)["sps"]


if __name__ == "__main__":
    if "VLMRM_BENCH_TASK" in os.environ:
        measure_in_this_rank(json.loads(os.environ["VLMRM_BENCH_TASK"]))
        sys.exit()
    args = tyro.cli(Args)
    threads = f"{args.threads} torch threads" if args.threads else "the cores shared out"
    print(
        f"{args.clip_model} (random weights), --num-envs {args.num_envs}, processes {args.processes}, "
        f"{os.cpu_count()} CPU cores, {threads}"
    )
    speedups = []
    for script in args.scripts:
        sps = [steps_per_second(script, processes, args) for processes in args.processes]
        speedups.append(sps[-1] / sps[0])
        measured = ", ".join(f"{n} process{'es' if n > 1 else ''} {s:.1f}" for n, s in zip(args.processes, sps))
        print(f"{script:>24}: env steps/s with {measured} | speedup x{sps[-1] / sps[0]:.2f}")
    print(f"min speedup with {args.processes[-1]} processes x{min(speedups):.2f}")
