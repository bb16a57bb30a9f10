"""Whole-model throughput (molecules/s, clouds/s), training and inference, node-wise vs reference.

The QM9 and ModelNet models are built with their constructor defaults (group SO(3)); every
:class:`~steerable.nn.ImplicitPointConv` inside is switched to the path under test. A training
step is forward + MSE-to-zero loss + backward + Adam step; inference is a ``no_grad`` forward in
eval mode. Each (model, path) runs in its own worker process, like the conv benchmark.

``modelnet`` is timed as it trains: the batch carries the point hierarchy (subsampling + kNN
graphs), which the data-loader workers build per item (``model.loader_transform``); their cost per
batch is reported as ``loader_transform_s`` (done in parallel with the step when workers run).
``modelnet_graphs_in_step`` builds the hierarchy inside every step instead.

A second, *paired* job per model runs the training steps of all paths in one process, round by
round (reference, node-wise, compiled, reference, …): each round's ratio sees the same machine load,
so the median of the per-round ratios is steadier on a shared machine than the ratio of two medians
taken minutes apart in separate processes. The per-path jobs give memory and inference.
"""

from __future__ import annotations

import importlib
import statistics
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from steerable.bench.measure import median_time, peak_memory_mb, tensor_peak_mb, timed_repeats
from steerable.bench.report import memory_mb
from steerable.bench.shapes import build_inputs, shape

MODELS = {"qm9": ("steerable.models.qm9", "QM9Model"),
          "modelnet": ("steerable.models.modelnet", "ModelNetModel"),
          "modelnet_graphs_in_step": ("steerable.models.modelnet", "ModelNetModel")}
LOADER_TRANSFORM = {"modelnet"}  # batches carry what the model's loader_transform builds per item
PATHS = ("reference", "nodewise", "compiled")  # compiled: node-wise with compile_mlp


def model_shapes(quick: bool) -> dict[str, dict]:
    """QM9: 32 molecules × 18 atoms, bond graph; ModelNet: 8 clouds × 1,024 points (graphs from the model)."""
    if quick:
        qm9, clouds = shape("qm9_model", "qm9", 2, 18, "radius", 1.6, "5x0e"), (1, 128)
    else:
        qm9, clouds = shape("qm9_model", "qm9", 32, 18, "radius", 1.6, "5x0e"), (8, 1024)
    modelnet = shape("modelnet_model", "modelnet", *clouds, "knn", 4, "1x0e")
    return {"qm9": qm9, "modelnet": modelnet, "modelnet_graphs_in_step": modelnet}


def model_jobs(quick: bool, threads: int, repeats: int, budget_s: float, device: str = "cpu",
               models: list[str] | tuple[str, ...] = tuple(MODELS), paths: tuple[str, ...] = PATHS,
               paired: bool = True) -> list[dict]:
    """One job per (model, path), then a paired job per model; a ``skip`` entry (with the reason) for
    models that do not import.

    Args:
        models: names of :data:`MODELS` to run.
        paths: paths of :data:`PATHS` each model runs (also those its paired job interleaves).
        paired: add the paired job (needs ``reference`` and another path among ``paths``).

    Raises:
        ValueError: naming unknown models or paths.
    """
    unknown = [m for m in models if m not in MODELS] + [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f"unknown models/paths {unknown}: models are {list(MODELS)}, paths {list(PATHS)}")
    jobs = []
    for name, (module, cls) in MODELS.items():
        if name not in models:
            continue
        try:
            getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            jobs.append(dict(model=name, skip=f"{module}.{cls} not available: {err}"))
            continue
        common = dict(model=name, shape=model_shapes(quick)[name], threads=threads, seed=0,
                      repeats=1 if quick else repeats, budget_s=budget_s, device=device)
        jobs += [dict(kind="model", path=path, **common) for path in paths]
        if paired and "reference" in paths and len(paths) > 1:
            jobs.append(dict(kind="model_pair", path="paired", paths=list(paths), **common))
    return jobs


def _batch(name: str, spec: dict, transform=None):
    """The synthetic batch of ``spec``; ``transform`` (per item) is applied to every cloud first."""
    from torch_geometric.data import Batch
    inputs = build_inputs(spec, 1)
    gen = torch.Generator().manual_seed(1)
    n = inputs["pos"].shape[0]
    if name == "qm9":
        x = F.one_hot(torch.randint(0, 5, (n,), generator=gen), 5).float()
        e = inputs["edge_index"].shape[1]
        edge_attr = F.one_hot(torch.randint(0, 4, (e,), generator=gen), 4).float()
        return Batch(x=x, pos=inputs["pos"], edge_index=inputs["edge_index"], edge_attr=edge_attr,
                     batch=inputs["batch"])
    if transform is None:
        return Batch(pos=inputs["pos"], batch=inputs["batch"])
    return collate_clouds(inputs["pos"], inputs["batch"], transform)


def collate_clouds(pos: torch.Tensor, index: torch.Tensor, transform):
    """What the data loader does per batch: ``transform`` each cloud of ``pos (N, 3)``, then collate."""
    from torch_geometric.data import Batch, Data
    clouds = pos.split(torch.bincount(index).tolist())
    return Batch.from_data_list([transform(Data(pos=cloud)) for cloud in clouds])


def _prepared(job: dict, path: str) -> SimpleNamespace:
    """The model of ``job`` on ``path`` with its batch, ``train``/``infer`` step closures and convs.

    Seeded from the job, so every path of a model starts from the same weights.
    """
    from steerable.nn.point_conv import ImplicitPointConv
    torch.manual_seed(int(job["seed"]))
    module, cls = MODELS[job["model"]]
    device = torch.device(job.get("device", "cpu"))
    compiled = path == "compiled"
    model_cls = getattr(importlib.import_module(module), cls)
    model = model_cls(group={"name": "so3"}, conv=dict(compile_mlp=compiled)).to(device)
    convs = [m for m in model.modules() if isinstance(m, ImplicitPointConv)]
    for conv in convs:
        conv.path = "nodewise" if compiled else path
    transform = model.loader_transform if job["model"] in LOADER_TRANSFORM else None
    batch = _batch(job["model"], job["shape"], transform).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        optimiser.zero_grad(set_to_none=True)
        model(batch).square().mean().backward()
        optimiser.step()

    def infer_step():
        model.eval()
        with torch.no_grad():
            model(batch)

    return SimpleNamespace(model=model, batch=batch, train=train_step, infer=infer_step, convs=convs,
                           transform=transform, device=device, compiled=compiled)


def run_model_job(job: dict) -> dict:
    """Training and inference throughput (graphs/s) and training-step peak memory of one (model, path)."""
    torch.set_num_threads(int(job["threads"]))
    if job.get("kind") == "model_pair":
        return run_paired_job(job)
    run = _prepared(job, job["path"])
    train_step, infer_step, device, spec = run.train, run.infer, run.device, job["shape"]
    loader_s = 0.0
    if run.transform is not None:  # the loader workers' share, off the training step
        loader_s = median_time(
            lambda: collate_clouds(run.batch.pos.cpu(), run.batch.batch.cpu(), run.transform), 3)[0]
    first_s, _ = median_time(train_step, 1, device)  # compiles φ's graphs on the compiled path
    warm_s, _ = median_time(train_step, 1, device) if run.compiled else (first_s, None)
    repeats = timed_repeats(warm_s, int(job["repeats"]), float(job["budget_s"]))
    train_s, _ = median_time(train_step, repeats, device)
    infer_step()  # warmup (compiles the graphs without autograd on the compiled path)
    infer_s, _ = median_time(infer_step, repeats, device)
    tensor_mb = tensor_peak_mb(train_step)
    memory_mb, method = peak_memory_mb(train_step, device)  # last: it slows malloc
    graphs = int(spec["graphs"])
    return dict(model=job["model"], path=job["path"], graphs=graphs, points_per_graph=int(spec["points"]),
                implicit_convs=len(run.convs), first_train_step_s=first_s, train_step_s=train_s,
                infer_step_s=infer_s, loader_transform_s=loader_s,
                train_graphs_per_s=graphs / train_s, infer_graphs_per_s=graphs / infer_s,
                train_tensor_peak_mb=tensor_mb, train_peak_mb=memory_mb, memory_method=method,
                threads=torch.get_num_threads(),
                device=str(device))


def run_paired_job(job: dict) -> dict:
    """Training steps of every path, interleaved round by round in one process (see the module doc).

    Returns the per-round step times of each path and, per non-reference path, the median over
    rounds of ``reference time / path time`` (``paired_speedup``).
    """
    runs = {path: _prepared(job, path) for path in job.get("paths", PATHS)}
    for run in runs.values():  # warmup; compiles φ's graphs on the compiled path
        run.train()
        run.train()
    round_s = sum(median_time(run.train, 1, run.device)[0] for run in runs.values())
    rounds = timed_repeats(round_s, int(job["repeats"]), float(job["budget_s"]))
    times: dict[str, list[float]] = {path: [] for path in runs}
    for _ in range(rounds):
        for path, run in runs.items():
            times[path].append(median_time(run.train, 1, run.device)[0])
    speedup = {path: statistics.median(r / t for r, t in zip(times["reference"], times[path]))
               for path in runs if path != "reference"}
    return dict(model=job["model"], path="paired", kind="model_pair", rounds=rounds, step_s=times,
                paired_speedup=speedup, threads=torch.get_num_threads(), device=job.get("device", "cpu"))


def summarise_models(results: list[dict]) -> list[dict]:
    """Per model: node-wise / reference ratios of training and inference throughput and memory, and
    the paired (interleaved) training ratios when the paired job ran."""
    out = []
    for name in MODELS:
        rows = {r.get("path"): r for r in results if r.get("model") == name and "train_step_s" in r}
        skipped = [r for r in results if r.get("model") == name and "skip" in r]
        if skipped:
            out.append(dict(model=name, skip=skipped[0]["skip"]))
        if "reference" in rows and "nodewise" in rows:
            ref, nw, co = rows["reference"], rows["nodewise"], rows.get("compiled")
            line = dict(model=name, train_speedup=ref["train_step_s"] / nw["train_step_s"],
                        infer_speedup=ref["infer_step_s"] / nw["infer_step_s"],
                        memory_ratio=memory_mb(ref, "train_") / max(memory_mb(nw, "train_"), 1.0),
                        reference=ref, nodewise=nw)
            if co:
                line.update(compiled=co, compiled_train_speedup=ref["train_step_s"] / co["train_step_s"],
                            compiled_infer_speedup=ref["infer_step_s"] / co["infer_step_s"])
            pair = next((r for r in results if r.get("model") == name and "paired_speedup" in r), None)
            if pair:
                line.update(paired_rounds=pair["rounds"],
                            paired_train_speedup=pair["paired_speedup"].get("nodewise"),
                            paired_compiled_train_speedup=pair["paired_speedup"].get("compiled"))
            out.append(line)
    return out
