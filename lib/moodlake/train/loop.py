"""The training loop that runs in every DDP process (TorchDistributor, torchrun, or alone).

``train_worker(spec)`` takes a plain, JSON-able run spec (see :func:`moodlake.train.launch.make_spec`):

- process group: NCCL with GPUs, gloo without (``RANK``/``WORLD_SIZE`` from the launcher); bf16
  autocast on GPUs; every rank reads its own Petastorm shard with the same number of batches;
- the recipe: optimizer (Adam, SGD, RMSprop), the learning rate halved after ``plateau_patience``
  epochs without validation-loss improvement, early stopping after ``early_stopping_patience``
  (the validation loss is the log loss of what the model predicts: for the multitask model, each
  post's routed head, not the sum over all heads it trains on, which is kept as ``val_objective``),
  class weights against imbalance, training phases (Zhu's branch-by-branch schedule);
- a checkpoint after every epoch (model, optimizer, scheduler, phase and epoch, counters, torch
  RNG state, the spec, the vocabulary): started again, the run continues from the last one and
  ends where an unbroken run would; the best epoch's weights are kept in ``best.pt``; parts of the
  model that no training post connects (:func:`moodlake.models.multitask.independent_parts`: the
  image and text halves of a model trained on unpaired image-only and text-only posts) each keep
  the weights of the epoch where the loss of their own validation posts was lowest, as if trained
  alone (``recipe.select_parts``; the learning-rate and stopping decisions stay those of the whole);
- progress on rank 0's console (epoch, step, loss, samples/s) and one JSON line per epoch in
  ``metrics.jsonl``, which the driver turns into ``moodlake.training_runs``.

Validation metrics are all-reduced, so every rank takes the same scheduler and stopping decisions.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from moodlake import storage

CHECKPOINTS = "checkpoints"


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _n(batch: dict) -> int:
    """The rows of a batch (posts or video segments)."""
    return len(batch["post_id"] if "post_id" in batch else batch["segment_id"])


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _optimizer(groups: list[dict], recipe: dict) -> torch.optim.Optimizer:
    kind, wd = recipe["optimizer"], recipe["weight_decay"]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=wd)
    return torch.optim.Adam(groups, lr=recipe["lr"], weight_decay=wd)


def latest_checkpoint(run_dir: str | Path) -> Path | str | None:
    """The run's last checkpoint: a Path in a plain local run folder, else its URI (moodlake.storage)."""
    found = [n for n in storage.listdir(storage.join(run_dir, CHECKPOINTS)) if n.startswith("epoch-") and n.endswith(".pt")]
    return storage.native(storage.join(run_dir, CHECKPOINTS, max(found))) if found else None


def _load(path, map_location):
    """``torch.load`` of weights only (no code unpickled) from a path or a filesystem URI."""
    with storage.local_copy(path) as local:
        return torch.load(local, map_location=map_location, weights_only=True)


def _save(obj: dict, path: str | Path) -> None:
    """Write a checkpoint whole (a local temporary file, then renamed or uploaded; moodlake.storage)."""
    with storage.local_output(path) as tmp:
        torch.save(obj, tmp)


def class_weights(spec: dict) -> torch.Tensor | None:
    """Inverse class frequency in the training split, normalised to mean 1 (None: not asked for)."""
    if spec["recipe"]["class_weighting"] != "inverse_frequency":
        return None
    import pyarrow.parquet as pq

    k = len(spec["labels"])
    column = "labels" if spec["multi_label"] else "label"
    filesystem, path = storage.filesystem(storage.join(spec["dataset"]["path"], "train"))
    values = pq.ParquetDataset(path, filesystem=filesystem).read(columns=[column]).column(column).to_pylist()
    if spec["multi_label"]:
        from petastorm.codecs import NdarrayCodec  # the multi-hot vectors are stored with petastorm's codec

        counts = np.sum([NdarrayCodec().decode(None, v) for v in values], axis=0)
    else:
        counts = np.bincount([v for v in values if v >= 0], minlength=k).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / k, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def cache_frozen_stages(model: nn.Module, recipe: dict, device: torch.device) -> bool:
    """Memoise the frozen part of every pretrained extractor in ``model`` (``recipe.frozen_cache_mb``,
    shared among them) where that gives the same numbers as computing it, on the CPU: the frozen
    stages of image backbones when there is no augmentation (the same images come back every
    epoch), the frozen layers of a pretrained text encoder always (text is not augmented).
    Returns whether a cache was set."""
    from moodlake.models.backbones import ImageBackbone
    from moodlake.models.multitask import MiniLMText

    mb = recipe.get("frozen_cache_mb", 0)
    if not mb or device.type != "cpu":
        return False
    cached = [m for m in model.modules()
              if (isinstance(m, ImageBackbone) and not recipe["augment"]) or isinstance(m, MiniLMText)]
    for module in cached:
        module.cache_frozen(mb * 2**20 // len(cached))
    return bool(cached)


class _Meter:
    """Sums of validation quantities, all-reduced across ranks."""

    def __init__(self, k: int, device):
        # objective sum, rows, correct, scored, NLL of the predictions, tp/fp/fn, then the NLL and
        # the rows per modality pattern (pattern_code: 8 of each)
        self.v = torch.zeros(5 + 3 * k + 16, dtype=torch.float64, device=device)
        self.k = k

    def add_patterns(self, codes: torch.Tensor, nll_rows: torch.Tensor) -> None:
        at = 5 + 3 * self.k
        self.v[at:at + 8].index_add_(0, codes, nll_rows.double())
        self.v[at + 8:at + 16].index_add_(0, codes, torch.ones_like(nll_rows, dtype=torch.float64))

    def add(self, loss_sum, rows, correct=0, scored=0, nll=0.0, tp=None, fp=None, fn=None):
        self.v[0] += loss_sum
        self.v[1] += rows
        self.v[2] += correct
        self.v[3] += scored
        self.v[4] += nll
        if tp is not None:
            self.v[5:5 + self.k] += tp
            self.v[5 + self.k:5 + 2 * self.k] += fp
            self.v[5 + 2 * self.k:5 + 3 * self.k] += fn

    def reduce(self, world: int) -> dict:
        if world > 1:
            dist.all_reduce(self.v)
        v = self.v.cpu().numpy()
        k, at = self.k, 5 + 3 * self.k
        tp, fp, fn = v[5:5 + k], v[5 + k:5 + 2 * k], v[5 + 2 * k:at]
        # F1 from the counts by hand, as moodlake.evaluation.metrics defines it (0 where undefined):
        # the counts are summed over batches and all-reduced over the ranks, and scikit-learn's
        # f1_score needs the labels themselves, which no rank holds all of.
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        return {"objective": float(v[0] / max(v[1], 1)), "loss": float(v[4] / max(v[3], 1)),
                "accuracy": float(v[2] / max(v[3], 1)), "macro_f1": float(f1.mean()), "rows": int(v[1]),
                "pattern_nll": v[at:at + 8].tolist(), "pattern_rows": v[at + 8:at + 16].tolist()}


def _evaluate_intensity(model, adapter, loader, device, k: int, world: int, autocast) -> dict:
    """Validation of an intensity regression (video segments): ``loss`` and ``objective`` are the mean
    absolute error over rows and emotions (the training loss), ``accuracy`` the binary accuracy
    (emotion present: intensity rounded above 0, as :func:`moodlake.models.williams.emotion_metrics`)
    over rows and emotions; sums all-reduced over the ranks."""
    from moodlake.models.williams import MAX_INTENSITY

    model.eval()
    v = torch.zeros(3, dtype=torch.float64, device=device)  # absolute error, binary hits, rows
    with torch.no_grad():
        for batch in loader:
            batch = _to(batch, device)
            with autocast():
                outputs = adapter.forward(model, batch)
            pred, rows = adapter.probabilities(model, outputs, batch)
            rows = rows & torch.isfinite(batch["labels"]).all(1)
            if not rows.any():
                continue
            p, t = pred[rows].double(), batch["labels"][rows].double()
            present = (torch.round(p).clamp(0, MAX_INTENSITY) > 0) == (torch.round(t).clamp(0, MAX_INTENSITY) > 0)
            v += torch.stack([(p - t).abs().sum(), present.sum().double(), rows.sum().double()])
    if world > 1:
        dist.all_reduce(v)
    cells = max(float(v[2]) * k, 1.0)
    mae = float(v[0]) / cells
    return {"objective": mae, "loss": mae, "accuracy": float(v[1]) / cells, "macro_f1": float("nan"),
            "rows": int(v[2]), "pattern_nll": [0.0] * 8, "pattern_rows": [0.0] * 8}


def _evaluate(model, adapter, loader, device, k: int, multi_label: bool, world: int, autocast, weights) -> dict:
    from moodlake.models.multitask import pattern_code

    if adapter.task == "intensity":
        return _evaluate_intensity(model, adapter, loader, device, k, world, autocast)
    model.eval()
    meter = _Meter(k, device)
    with torch.no_grad():
        for batch in loader:
            batch = _to(batch, device)
            with autocast():
                outputs = adapter.forward(model, batch)
                loss = adapter.loss(model, outputs, batch, weights)
            probs, rows = adapter.probabilities(model, outputs, batch)  # one forward pass per batch
            meter.add(loss.item() * _n(batch), _n(batch))
            if not multi_label:
                rows = rows & (batch["label"] >= 0)
            n = int(rows.sum())
            if n == 0:
                continue
            probs = probs[rows].float().clamp(1e-7, 1 - 1e-7)
            if multi_label:
                true = batch["labels"][rows].float()
                nll = -(true * probs.log() + (1 - true) * (1 - probs).log()).mean(1)
                pred, true = probs >= 0.5, true >= 0.5
                meter.add(0, 0, 0, n, float(nll.sum()), (pred & true).sum(0), (pred & ~true).sum(0),
                          (~pred & true).sum(0))
            else:
                nll = -probs.gather(1, batch["label"][rows].unsqueeze(1)).log().squeeze(1)
                meter.add(0, 0, int((probs.argmax(1) == batch["label"][rows]).sum()), n, float(nll.sum()))
            meter.add_patterns(pattern_code(batch["mask"][rows]), nll)
    return meter.reduce(world)


def part_losses(parts: dict, val: dict) -> dict[str, float]:
    """Each part's validation loss: the log loss of the validation posts routed to its heads (a part
    without validation posts has none)."""
    out = {}
    for name, (members, _) in parts.items():
        rows = sum(val["pattern_rows"][c] for c in members)
        if rows > 0:
            out[name] = sum(val["pattern_nll"][c] for c in members) / rows
    return out


def assemble_best(best: dict | None, current: dict, parts: dict, take: dict[str, bool], take_rest: bool) -> dict:
    """The best weights after an epoch: each part's tensors from ``current`` where ``take[part]`` (its
    validation loss improved), the tensors of no part where ``take_rest`` (the whole validation loss
    improved), the rest kept from ``best``."""
    out = dict(best or {})
    for key, value in current.items():
        owner = next((name for name, (_, prefixes) in parts.items() if key.startswith(prefixes)), None)
        if (take_rest if owner is None else take[owner]) or key not in out:
            out[key] = value.detach().clone()
    return out


def train_step(ddp, model: nn.Module, adapter, batch: dict, optimizer: torch.optim.Optimizer, weights, phase: str,
               autocast=nullcontext) -> torch.Tensor:
    """One optimisation step on ``batch`` (this rank's part of the global batch): forward through ``ddp``
    (the DistributedDataParallel wrapper, or the model itself in one process), the adapter's loss,
    backward (DDP averages the ranks' gradients) and the optimizer's step; the loss."""
    with autocast():
        outputs = adapter.forward(ddp, batch)
        loss = adapter.loss(model, outputs, batch, weights, phase)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_worker(spec: dict) -> dict:
    """Train as ``spec`` says; returns the run's history, its best weights' path and every rank's
    parameter checksum (the same on every rank)."""
    from moodlake.data.loader import PostLoader, SegmentLoader
    from moodlake.data.vocab import Vocab
    from moodlake.models.multitask import pattern_code
    from moodlake.train.adapters import adapter_for
    from moodlake.train.distributed import init_process_group

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\..*")  # pyarrow legacy API, harmless
    rank, world = _rank_world()
    use_gpu = spec["use_gpu"] and torch.cuda.is_available()
    if spec["use_gpu"] and not use_gpu:
        raise RuntimeError("training.use_gpu is set but no CUDA device is visible")
    threads = spec["torch_threads"] or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    if world > 1 and not dist.is_initialized():
        init_process_group("nccl" if use_gpu else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_gpu else "cpu")
    if use_gpu:
        torch.cuda.set_device(device)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_gpu else nullcontext()

    run_dir = spec["run_dir"]  # a path or a filesystem URI that every rank reaches (moodlake.storage)
    recipe, labels = spec["recipe"], tuple(spec["labels"])
    adapter = adapter_for(spec["model"])
    if adapter.task != spec.get("task", "classification"):
        raise ValueError(f"model {spec['model']} is a {adapter.task} model; dataset {spec['dataset']['name']} "
                         f"is a {spec.get('task', 'classification')} dataset")
    # video segments have no vocabulary (their text is word vectors)
    vocab = (Vocab.from_json(storage.read_text(storage.join(spec["dataset"]["path"], "vocab.json")))
             if adapter.task == "classification" else None)
    torch.manual_seed(spec["seed"])
    model, build_kwargs = adapter.build(spec["model"], spec["model_kwargs"], labels, vocab, spec["multi_label"],
                                        glove=recipe["glove"])
    model.to(device)
    cache_frozen_stages(model, recipe, device)
    weights = class_weights(spec)
    weights = weights.to(device) if weights is not None else None
    phases = adapter.phases(model)
    fresh = {"phase": 0, "phase_epoch": 0, "epoch": 0, "best_val_loss": math.inf, "bad_epochs": 0, "history": [],
             "best_epoch": 0, "patterns": [], "best_part_loss": {}, "part_epochs": {}}
    state = dict(fresh)
    checkpoint = latest_checkpoint(run_dir)
    saved = _load(checkpoint, device) if checkpoint else None
    best_path, best_state = storage.join(run_dir, "best.pt"), None
    if saved:
        model.load_state_dict(saved["model"])
        state = {**fresh, **json.loads(saved["state"])}
        torch.set_rng_state(saved["rng"].cpu())
        if rank == 0 and storage.exists(best_path):
            best_state = _load(best_path, "cpu")["model"]
        if rank == 0:
            print(f"[{spec['run_id']}] resuming after epoch {state['epoch']} ({storage.name(checkpoint)})", flush=True)

    common = dict(num_labels=len(labels), rank=rank, world_size=world, seed=spec["seed"],
                  workers_count=spec["reader_workers"])
    if adapter.task == "intensity":
        if recipe["augment"]:
            raise ValueError(f"recipe of {spec['model']}: augment is for images; set augment: false")
        loader = SegmentLoader
    else:
        loader, common = PostLoader, {**common, "preprocessing": adapter.preprocessing}
    train_loader = loader(spec["dataset"]["path"] + "/train", batch_size=recipe["batch_size"], shuffle=True,
                          drop_last=True, **({"augment": True} if recipe["augment"] else {}), **common)
    val_loader = loader(spec["dataset"]["path"] + "/val", batch_size=recipe["batch_size"], shuffle=False,
                        drop_last=False, **common)
    if world > 1 and use_gpu:
        # the ranks normalise with the whole global batch's statistics, as one process would
        # (tests/test_ddp_equivalence.py; SyncBatchNorm runs on GPUs only: on CPUs each rank uses its own)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model

    while state["phase"] < len(phases):
        phase = phases[state["phase"]]
        adapter.enter_phase(model, phase)
        optimizer = _optimizer(adapter.param_groups(model, recipe["lr"], phase), recipe)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=recipe["plateau_factor"], patience=recipe["plateau_patience"])
        if saved and saved["state_phase"] == state["phase"] and state["phase_epoch"] > 0:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        saved = None
        while state["phase_epoch"] < recipe["max_epochs"] and state["bad_epochs"] < recipe["early_stopping_patience"]:
            epoch = state["epoch"] + 1
            train_loader.set_epoch(epoch)
            ddp.train()
            t0, last_print, loss_sum, seen = time.perf_counter(), time.perf_counter(), 0.0, 0
            patterns = torch.zeros(8, dtype=torch.float64, device=device)  # training rows per modality pattern
            for step, batch in enumerate(train_loader, start=1):
                batch = _to(batch, device)
                codes = pattern_code(batch["mask"])
                patterns.index_add_(0, codes, torch.ones_like(codes, dtype=torch.float64))
                loss = train_step(ddp, model, adapter, batch, optimizer, weights, phase, autocast)
                loss_sum += loss.item() * _n(batch)
                seen += _n(batch)
                if rank == 0 and (time.perf_counter() - last_print > 10 or step == len(train_loader)):
                    rate = seen * world / (time.perf_counter() - t0)
                    print(f"[{spec['run_id']}] {phase} epoch {epoch} step {step}/{len(train_loader)} "
                          f"loss {loss_sum / seen:.4f} {rate:.1f} samples/s", flush=True)
                    last_print = time.perf_counter()
            train_seconds = time.perf_counter() - t0
            val = _evaluate(ddp, adapter, val_loader, device, len(labels), spec["multi_label"], world, autocast, weights)
            train_stats = torch.cat([torch.tensor([loss_sum, seen], dtype=torch.float64, device=device), patterns])
            if world > 1:
                dist.all_reduce(train_stats)
            train_loss = train_stats[:2]
            state["patterns"] = sorted(set(state["patterns"]) | {c for c in range(1, 8) if train_stats[2 + c] > 0})
            scheduler.step(val["loss"])
            improved = bool(val["loss"] < state["best_val_loss"] - 1e-6)
            state["best_val_loss"] = min(state["best_val_loss"], val["loss"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
            state["epoch"], state["phase_epoch"] = epoch, state["phase_epoch"] + 1
            if improved:
                state["best_epoch"] = epoch
            # parts of the model that no training post connects keep their own best epoch
            parts = adapter.parts(state["patterns"]) if recipe.get("select_parts", True) else {}
            parts = parts if len(parts) > 1 else {}
            losses, take = part_losses(parts, val), {}
            for name in parts:
                take[name] = (losses[name] < state["best_part_loss"].get(name, math.inf) - 1e-6
                              if name in losses else improved)
                if take[name]:
                    state["part_epochs"][name] = epoch
                    if name in losses:
                        state["best_part_loss"][name] = losses[name]
            row = {"epoch": epoch, "phase": phase, "train_loss": float(train_loss[0] / max(train_loss[1], 1)),
                   "val_loss": val["loss"], "val_objective": val["objective"],
                   "val_accuracy": val["macro_f1"] if spec["multi_label"] else val["accuracy"],
                   "lr": optimizer.param_groups[0]["lr"], "samples_per_s": float(train_loss[1]) / train_seconds,
                   "seconds": time.perf_counter() - t0, "processes": world, "improved": improved}
            if parts:
                row["val_loss_parts"] = losses
                row["part_improved"] = take
            state["history"].append(row)
            if rank == 0:
                if phase == phases[-1] and not parts and improved:
                    _save({"model": model.state_dict(), "epoch": epoch}, best_path)
                elif phase == phases[-1] and parts and (improved or any(take.values())):
                    best_state = assemble_best(best_state, model.state_dict(), parts, take, improved)
                    _save({"model": best_state, "epoch": state["best_epoch"],
                           "part_epochs": dict(state["part_epochs"])}, best_path)
                # the epoch's line before its checkpoint: killed in between, the run repeats the epoch and
                # its later line wins (read_history); the other way round the epoch's line would be lost
                storage.append_text(storage.join(run_dir, "metrics.jsonl"), json.dumps(row) + "\n")
                _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "state": json.dumps(state), "state_phase": state["phase"],
                       "rng": torch.get_rng_state(), "spec": json.dumps(spec), "build_kwargs": json.dumps(build_kwargs),
                       "vocab": vocab.to_json() if vocab else ""},
                      storage.join(run_dir, CHECKPOINTS, f"epoch-{epoch:04d}.pt"))
                print(f"[{spec['run_id']}] {phase} epoch {epoch}: train loss {row['train_loss']:.4f}, val loss "
                      f"{val['loss']:.4f}, val {_metric_name(adapter, spec)} "
                      f"{row['val_accuracy']:.4f}{' (best)' if improved else ''}"
                      + "".join(f"; {name} part val loss {loss:.4f}{' (best)' if take[name] else ''}"
                                for name, loss in losses.items()), flush=True)
            if world > 1:
                dist.barrier()
        state["phase"] += 1
        state["phase_epoch"], state["bad_epochs"], state["best_val_loss"] = 0, 0, math.inf
        state["best_part_loss"] = {}

    # every rank's parameters, summarised: DDP keeps them equal, and this is where one can see it
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    checksum = torch.stack([flat.sum(), (flat * flat).sum()]).to(device)
    checksums = [torch.zeros_like(checksum) for _ in range(world)]
    if world > 1:
        dist.all_gather(checksums, checksum)
    else:
        checksums = [checksum]
    best_metrics = _measure_best(model, ddp, adapter, spec, state, best_path, val_loader, device, world, autocast,
                                 weights)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    # every rank returns the same result: TorchDistributor's local mode keeps whichever rank's
    # return value is written last
    return {"history": state["history"], "build_kwargs": build_kwargs, "best": best_path,
            "param_checksums": [c.cpu().tolist() for c in checksums], "best_metrics": best_metrics}


def _metric_name(adapter, spec: dict) -> str:
    """What the history's ``val_accuracy`` holds."""
    if adapter.task == "intensity":
        return "binary accuracy"
    return "macro-F1" if spec["multi_label"] else "accuracy"


BEST_METRICS = "best_metrics.json"


def _measure_best(model, ddp, adapter, spec, state, best_path, val_loader, device, world, autocast,
                  weights) -> dict | None:
    """The validation metrics of a part-selected model's kept weights (each independent part from its
    own best epoch, :func:`assemble_best`), measured on the validation posts, written to the run's
    ``best_metrics.json``: what is registered is measured on the registered weights, not taken from
    the history row of any one epoch. None (and nothing written) where no part was selected: there
    the kept weights are the best epoch's, and its history row already measured them. Every rank takes
    part (the metrics are all-reduced); run again on a finished run, it measures the same weights."""
    parts = adapter.parts(state["patterns"]) if spec["recipe"].get("select_parts", True) else {}
    if len(parts) < 2 or not state["history"] or not storage.exists(best_path):
        return None
    model.load_state_dict(_load(best_path, device)["model"])
    val = _evaluate(ddp, adapter, val_loader, device, len(spec["labels"]), spec["multi_label"], world, autocast,
                    weights)
    measured = {"val_loss": val["loss"], "val_objective": val["objective"],
                "val_accuracy": val["macro_f1"] if spec["multi_label"] else val["accuracy"],
                "val_loss_parts": part_losses(parts, val), "measured_on": "registered weights"}
    if _rank_world()[0] == 0:
        storage.write_text(storage.join(spec["run_dir"], BEST_METRICS), json.dumps(measured))
    return measured
