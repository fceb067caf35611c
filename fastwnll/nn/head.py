"""``WNLLHead``: a drop-in replacement for a classifier's final ``nn.Linear`` whose output is the WNLL
graph interpolation of docs/design.md, section 2. The functions that feed it labels
(:mod:`fastwnll.nn.batch`) and templates, and that find and switch the WNLL heads of a model
(:mod:`fastwnll.nn.network`), live beside it.
Usage (any model whose last layer was an ``nn.Linear``, e.g. a torchvision ResNet's ``fc``)::

    model.fc = WNLLHead(model.fc.in_features, num_classes)
    model.train()
    with wnll_batch(model, y) as batch:          # hands the labels to every WNLLHead in the model
        out = model(x)                           # log-probabilities of the batch's query rows
        loss = F.cross_entropy(out, batch.targets)
    model.eval()
    collect_templates(model, (x_train, y_train), max_templates=5000)   # the test-time template bank
    pred = model(x_test).argmax(1)

**Evaluation is transductive by default.** In eval mode the rows of one forward are the queries of
one WNLL graph together with the template bank: a query's scores depend on the other rows of its
batch (they are graph nodes), so accuracy can change with the batch size and a query's neighbours
in the batch can change its prediction. This is the paper's protocol. ``WNLLHead(inference=
"inductive")`` interpolates each row against the bank alone: deterministic and independent of the
batch (docs/design.md, section 2.5). Evaluation results record the graph (``graph_summary``).

The head returns log-probabilities ``[rows, C]``. ``F.cross_entropy`` and ``F.nll_loss`` give the
same loss value on them (``log_softmax`` of log-probabilities is the identity), but with the
default ``gradient="surrogate"`` only ``F.cross_entropy`` makes the backward depend on the WNLL
output: it sends ``p_wnll - onehot`` through the linear layer, while ``F.nll_loss`` sends the plain
linear head's ``softmax(z) - onehot``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fastwnll.knn import check_backend, exact_backend
from fastwnll.wnll.bank import TemplateBank, contents_stamp
from fastwnll.wnll.weights import check_options as check_graph_options

from .checks import check_labels, positive_int
from .distributed_graph import GRAPHS, gather_rows

if TYPE_CHECKING:
    from .batch import WNLLBatch

MODES = ("wnll", "linear")
# The backward of a WNLL head: the paper's linear-layer surrogate, or exact through the interpolation.
# The one definition of the gradient modes; training, attacks and evaluation take it from here.
GRADIENTS = ("surrogate", "exact")
# How eval mode builds the graph: the batch's rows together with the bank (the paper's protocol), or
# each row against the bank alone.
INFERENCE = ("transductive", "inductive")
# WNLL probabilities are floored here (and renormalized) before the log, so losses stay finite.
PROB_FLOOR = 1e-8
# Elements (rows x classes x features) of the row-by-row linear layer of an inductive head held at once.
_ROW_LINEAR_ELEMENTS = 1 << 22


class WNLLHead(nn.Module):
    """WNLL interpolating output layer: a drop-in replacement for ``nn.Linear(in_features, num_classes)``.

    Input ``[rows, in_features]`` float features (CPU or CUDA); output ``[rows_out, num_classes]``
    log-probabilities in the head's dtype (that of its linear layer and bank: float32 by default,
    float64 after ``.double()``). Features of a lower precision (float16/bfloat16 from an autocast
    network, float32 into a float64 head) are cast up to it; features of a higher precision
    (float64 into a float32 head) are refused rather than silently rounded.

    - ``mode="linear"``: ``log_softmax(linear(x))`` of all rows (the paper's stage 1).
    - ``mode="wnll"``, training: the labels come from :func:`wnll_batch`; the batch is split into
      templates (a ``template_fraction`` of the rows) and queries, and the output holds the
      queries' rows only (``batch.targets`` are their labels): the WNLL interpolation of the
      templates' labels at the queries, computed with :func:`fastwnll.wnll_interpolate` in float32
      (autocast off) over the graph of the batch.
    - ``mode="wnll"``, eval: every row is a query, interpolated against the template bank
      (:meth:`set_templates`, :func:`collect_templates`) through its index
      (:class:`fastwnll.TemplateBank`, built on first use and rebuilt whenever the bank or the graph
      options change: the same scores as :func:`fastwnll.wnll_interpolate` with the bank, without
      its kNN graph of the bank on every call). With ``template_batches = N`` the bank is split into
      ``N`` chunks, each holding every class (:meth:`template_chunks`), each interpolated
      separately, and the scores averaged (the paper's protocol: several template batches, scores
      summed).

    **Inference** (eval mode): ``"transductive"`` (default) puts the rows of a forward and the bank
    in one graph, so a row's scores depend on the other rows of the batch (they are graph nodes,
    and ``mu = n/m - 1`` grows with the batch): accuracy depends a little on the batch size and a
    row's neighbours in the batch can shift its prediction. It is the default because it is the
    paper's protocol and the graph the head is trained on (stage 2 interpolates a batch's queries
    together), so published numbers and existing results keep their meaning. ``"inductive"``
    interpolates each row against the bank alone (``mu = 1/m``; a closed form, no solve):
    deterministic and independent of the batch, bit for bit, outputs and input gradients, with
    either gradient (the surrogate's linear layer is then evaluated row by row), the choice for
    serving single inputs or for attacks whose result must not depend on the batch.

    ``graph`` (training only; docs/design.md, section 7): ``"local"`` (the default) builds the
    training graph over the rows this process holds; ``"global"``, for data-parallel training under an
    initialized ``torch.distributed`` process group, over the rows of every process (gathered with a
    differentiable all-gather, split by the same seeded rule on every process; the output holds this
    process's query rows, see :mod:`fastwnll.nn.distributed_graph`), so that the graph, and with the
    loss normalized over the global batch's queries the gradients, are those of one process holding
    the whole batch. ``"local"`` is the default because a layer must not start collective
    communication on its own: every process must then run every training forward, and a single
    process has no group to gather from (``"global"`` without one is an error).

    WNLL probabilities are floored at ``1e-8`` and renormalized before the log. ``gradient``:
    ``"surrogate"`` (the paper's): ``out = wnll.detach() + (lin - lin.detach())`` with
    ``lin = log_softmax(linear(x))``, i.e. WNLL's value exactly, the linear layer's backward;
    ``"exact"``: the backward goes through the interpolation (solver, graph weights, sigmas) to the
    features; the linear layer gets no gradient from it. ``mode``, ``gradient`` and ``inference``
    are plain attributes that may be changed at any time (``fastwnll.attacks.gradient_mode`` does).

    The template bank is made of the buffers ``template_features`` ``[N, in_features]`` and
    ``template_labels`` ``[N]`` int64: they move with ``.to()`` and are saved in ``state_dict``;
    loading a ``state_dict`` with a bank of another size resizes it. The index is not saved: it is
    rebuilt on the first evaluation after loading. It notices a new bank, ``.to()``, ``load_state_dict``
    and in-place edits of the buffers (through their version counters); edits that bypass them
    (through ``.data``) are not seen: call :meth:`set_templates` after those.

    Args:
        in_features, num_classes: as for ``nn.Linear`` (``num_classes >= 2``).
        k, k_sigma, mu, tol, max_iter, kernel: WNLL parameters, see :func:`fastwnll.wnll_interpolate`
            (``k_sigma=None``: ``min(8, k + 1)``).
        template_fraction: fraction of a training batch used as templates, in (0, 1); the paper's
            stage 2 used 1/3 (2,000 templates and 4,000 queries).
        template_batches: number of template chunks at evaluation.
        inference: ``"transductive"`` or ``"inductive"`` (see above).
        graph: ``"local"`` or ``"global"`` (see above).
        knn_backend: kNN search of the graphs, training and evaluation: an exact backend
            (``"auto"``, ``"native"``, ``"faiss"``, ``"torch"``: all give the same graph) or an
            approximate one (``"hnsw"``, ``"ivf"``, a :class:`fastwnll.ApproximateKNN` or its spec
            string such as ``"hnsw:ef_search=128"``, kept parsed: faster on large banks, *not* exact;
            :attr:`exact_knn` says which).
        device, dtype: of the linear layer and the bank.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        k: int = 15,
        k_sigma: int | None = None,
        mu: float | None = None,
        template_fraction: float = 1 / 3,
        gradient: str = "surrogate",
        mode: str = "wnll",
        tol: float | None = None,
        max_iter: int = 1000,
        kernel: str = "gaussian",
        template_batches: int = 1,
        inference: str = "transductive",
        knn_backend="auto",
        graph: str = "local",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.num_classes = positive_int("num_classes", num_classes, 2)
        self.k = positive_int("k", k)
        self.k_sigma = check_graph_options(self.k, k_sigma, kernel)
        if mu is not None and not (isinstance(mu, (int, float)) and mu >= 0):
            raise ValueError(f"mu must be None or a non-negative number, got {mu!r}")
        self.mu = mu
        if not (isinstance(template_fraction, (int, float)) and 0 < template_fraction < 1):
            raise ValueError(f"template_fraction must be in (0, 1), got {template_fraction!r}")
        self.template_fraction = float(template_fraction)
        self.tol = tol
        self.max_iter = positive_int("max_iter", max_iter)
        self.kernel = kernel
        self.template_batches = positive_int("template_batches", template_batches)
        self.gradient = gradient
        self.mode = mode
        self.inference = inference
        self.graph = graph
        self.knn_backend = check_backend(knn_backend)
        self._check_settings()
        self.linear = nn.Linear(in_features, num_classes, device=device, dtype=dtype)
        bank_dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("template_features", torch.empty(0, in_features, device=device, dtype=bank_dtype))
        self.register_buffer("template_labels", torch.empty(0, dtype=torch.int64, device=device))
        self._batch: WNLLBatch | None = None
        self._banks: tuple | None = None  # (what they were built from, [TemplateBank per chunk])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, mode={self.mode!r}, "
            f"gradient={self.gradient!r}, inference={self.inference!r}, graph={self.graph!r}, k={self.k}, "
            f"k_sigma={self.k_sigma}, "
            f"template_fraction={self.template_fraction:.3g}, templates={self.num_templates}"
            + ("" if self.knn_backend == "auto" else f", knn_backend={self.knn_backend!r}")
        )

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {**state, "_banks": None}  # the index is rebuilt, never copied or pickled

    @property
    def num_templates(self) -> int:
        """Number of templates in the bank."""
        return self.template_labels.shape[0]

    @property
    def exact_knn(self) -> bool:
        """Whether the head's graphs are exact kNN graphs (False with an approximate ``knn_backend``)."""
        return exact_backend(self.knn_backend)

    def _check_settings(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"WNLLHead.mode must be one of {MODES}, got {self.mode!r}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"WNLLHead.gradient must be one of {GRADIENTS}, got {self.gradient!r}")
        if self.inference not in INFERENCE:
            raise ValueError(f"WNLLHead.inference must be one of {INFERENCE}, got {self.inference!r}")
        if self.graph not in GRAPHS:
            raise ValueError(f"WNLLHead.graph must be one of {GRAPHS}, got {self.graph!r}")

    # ----------------------------------------------------------------------------- template bank
    def set_templates(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Replace the template bank with ``features`` ``[N, in_features]`` (float, finite) and
        ``labels`` ``[N]`` (int64 in ``[0, num_classes)``). Both are copied (detached) to the bank's
        device and dtype. Warns when a class has no template (it can never be predicted)."""
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError("template features must be a floating-point torch.Tensor")
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"template features must have shape [N, {self.in_features}], got {tuple(features.shape)}")
        if features.shape[0] == 0:
            raise ValueError("the template bank cannot be empty (use clear_templates() to empty it)")
        check_labels("template labels", labels, features.shape[0])
        if not torch.isfinite(features).all():
            raise ValueError("template features contain NaN or Inf values")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"template labels lie in [{lo}, {hi}], outside [0, num_classes={self.num_classes})")
        missing = sorted(set(range(self.num_classes)) - set(labels.unique().tolist()))
        if missing:
            warnings.warn(
                f"the template bank has no template of class(es) {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''} (of {self.num_classes}): the WNLL head can never "
                "predict them",
                RuntimeWarning,
                stacklevel=2,
            )
        bank = self.template_features
        with torch.inference_mode(False):  # normal tensors, whose in-place changes the index can see
            self.template_features = features.detach().to(device=bank.device, dtype=bank.dtype).clone()
            self.template_labels = labels.detach().to(bank.device).clone()

    def clear_templates(self) -> None:
        """Empty the template bank."""
        self.template_features = self.template_features.new_empty(0, self.in_features)
        self.template_labels = self.template_labels.new_empty(0)

    def template_chunks(self) -> list[torch.Tensor]:
        """The rows of the bank in each of the ``template_batches`` chunks: within each class, the
        templates in bank order are dealt to the chunks in turn, so every chunk holds every class of
        the bank (an interleaved split could give each chunk one class, when the labels cycle with
        the chunk count). Each chunk's rows ascending (int64, on the bank's device).

        Raises ValueError when a class has fewer templates than there are chunks.
        """
        chunks, labels = self.template_batches, self.template_labels
        if chunks == 1:
            return [torch.arange(self.num_templates, device=labels.device)]
        if chunks > self.num_templates:
            raise ValueError(f"template_batches={chunks} exceeds the bank's {self.num_templates} templates")
        order = torch.argsort(labels, stable=True)
        classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
        short = counts < chunks
        if short.any():
            few = {int(c): int(n) for c, n in zip(classes[short][:10], counts[short][:10])}
            raise ValueError(
                f"template_batches={chunks} chunks cannot each hold every class: the bank has only "
                f"{few} (class: templates) for some classes; use fewer chunks or a larger bank"
            )
        rank = torch.arange(labels.shape[0], device=labels.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        chunk = torch.empty_like(rank)
        chunk[order] = rank % chunks
        return [(chunk == c).nonzero().squeeze(1) for c in range(chunks)]

    def template_banks(self) -> list[TemplateBank]:
        """The indexed template bank, one :class:`fastwnll.TemplateBank` per chunk (see
        :meth:`template_chunks`), built from the bank and the graph options (``k``, ``k_sigma``,
        ``kernel``, ``knn_backend``) on first use and rebuilt when any of them changed."""
        features, labels = self.template_features, self.template_labels
        if self.num_templates == 0:
            raise RuntimeError(
                "WNLLHead in eval mode with mode='wnll' has an empty template bank: fill it with "
                "fastwnll.nn.collect_templates(model, training_data) or head.set_templates(features, "
                "labels), or set head.mode = 'linear'"
            )
        key = (
            id(features),
            contents_stamp(features),
            id(labels),
            contents_stamp(labels),
            self.k,
            self.k_sigma,
            self.kernel,
            self.knn_backend,
            self.template_batches,
            self.num_classes,
        )
        banks = getattr(self, "_banks", None)
        if banks is None or banks[0] != key:
            rows = self.template_chunks()
            banks = (
                key,
                [
                    TemplateBank(
                        features if len(rows) == 1 else features[r],
                        labels if len(rows) == 1 else labels[r],
                        k=self.k,
                        k_sigma=self.k_sigma,
                        kernel=self.kernel,
                        num_classes=self.num_classes,
                        knn_backend=self.knn_backend,
                    )
                    for r in rows
                ],
            )
            self._banks = banks
        return banks[1]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The bank's size is data, not architecture: resize ours to the incoming one before copying.
        for name in ("template_features", "template_labels"):
            incoming = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != current.shape:
                if incoming.dim() != current.dim() or incoming.shape[1:] != current.shape[1:]:
                    continue  # a real mismatch: the default loader reports it
                setattr(self, name, current.new_empty(incoming.shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ----------------------------------------------------------------------------- forward
    def _input_dtype(self, features: torch.Tensor) -> torch.dtype:
        """The head's dtype, after checking that ``features`` can be cast to it without loss."""
        dtype = self.linear.weight.dtype
        rank = {torch.float16: 0, torch.bfloat16: 0, torch.float32: 1, torch.float64: 2}
        if rank.get(features.dtype, 3) > rank.get(dtype, 3):
            raise TypeError(
                f"WNLLHead holds {dtype} weights and bank but received {features.dtype} features: convert "
                f"the head (head.to({features.dtype})) or pass {dtype} features"
            )
        return dtype

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` ``[rows, in_features]`` -> log-probabilities (see the class docstring)."""
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError("WNLLHead expects a floating-point tensor of features")
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"WNLLHead expects features of shape [rows, {self.in_features}], got {tuple(features.shape)}"
            )
        self._check_settings()
        features = features.to(self._input_dtype(features))
        work = torch.float64 if features.dtype == torch.float64 else torch.float32
        if self.mode == "linear":
            return F.log_softmax(self.linear(features).to(work), dim=1)
        if self.training:
            if self._batch is None:
                raise RuntimeError(
                    "WNLLHead in training mode with mode='wnll' needs the batch labels: run the forward pass "
                    "inside `with fastwnll.nn.wnll_batch(model, y) as batch:` and compute the loss against "
                    "batch.targets (or call model.eval() / set head.mode = 'linear')"
                )
            own = None  # with a global graph: which of the graph's query rows are this process's
            if self.graph == "global":
                split = self._batch._global_split_for(features.shape[0], self.template_fraction)
                everyone = gather_rows(features, split.counts, differentiable=True)
                templates, labels = everyone[split.template_index], split.labels[split.template_index]
                queries, own = everyone[split.query_index], split.own_queries
                local_queries = features[split.local_query_index]
            else:
                template_rows, query_rows = self._batch._split_for(features.shape[0], self.template_fraction)
                templates, labels = features[template_rows], self._batch.labels[template_rows]
                queries = local_queries = features[query_rows]
        else:
            if self.template_features.device != features.device:
                raise RuntimeError(
                    f"the template bank is on {self.template_features.device} but the features are on "
                    f"{features.device}: move the model with .to(device)"
                )
            templates, labels, queries = None, None, features
            local_queries, own = queries, None
        if self.gradient == "exact":
            out = self._wnll_log_probs(queries.to(work), None if templates is None else templates.to(work), labels)
            return out if own is None else out[own]
        with torch.no_grad():
            wnll = self._wnll_log_probs(
                queries.detach().to(work), None if templates is None else templates.detach().to(work), labels
            )
        if own is not None:
            wnll = wnll[own]
        inductive = not self.training and self.inference == "inductive"
        logits = self._row_linear(local_queries) if inductive else self.linear(local_queries)
        lin = F.log_softmax(logits.to(work), dim=1)
        # WNLL's value exactly (lin - lin is 0), the linear layer's gradient
        return wnll.detach() + (lin - lin.detach())

    def _row_linear(self, features: torch.Tensor) -> torch.Tensor:
        """``self.linear(features)`` ``[rows, num_classes]`` computed so that a row's logits, and their
        gradient, do not depend on the other rows: an elementwise product summed over the features,
        in chunks of rows (a matrix product's blocking, and so its rounding, changes with the number
        of rows). Used by the inductive head, whose output must not depend on the batch."""
        weight, bias = self.linear.weight, self.linear.bias
        chunk = max(1, _ROW_LINEAR_ELEMENTS // weight.numel())
        logits = torch.cat(
            [(features[s : s + chunk].unsqueeze(1) * weight).sum(-1) for s in range(0, features.shape[0], chunk)]
        )
        return logits if bias is None else logits + bias

    @torch.compiler.disable
    def _wnll_log_probs(self, queries, templates=None, labels=None) -> torch.Tensor:
        """WNLL scores of ``queries``, floored and logged: against ``templates`` (training: one graph
        of the batch), or against the bank (the mean over its chunks). Runs outside autocast and
        outside torch.compile graphs (it calls a compiled op)."""
        from fastwnll.wnll.interpolate import wnll_interpolate

        with torch.autocast(device_type=queries.device.type, enabled=False):
            if templates is not None:
                scores = wnll_interpolate(
                    templates,
                    labels,
                    queries,
                    k=self.k,
                    k_sigma=self.k_sigma,
                    mu=self.mu,
                    num_classes=self.num_classes,
                    tol=self.tol,
                    max_iter=self.max_iter,
                    kernel=self.kernel,
                    knn_backend=self.knn_backend,
                )
            else:
                banks = self.template_banks()
                scores = sum(
                    bank.interpolate(
                        queries.to(bank.features.dtype),
                        inductive=self.inference == "inductive",
                        mu=self.mu,
                        tol=self.tol,
                        max_iter=self.max_iter,
                    )
                    for bank in banks
                )
                scores = scores / len(banks)
            probs = scores.clamp_min(PROB_FLOOR)
            return torch.log(probs / probs.sum(dim=1, keepdim=True))
