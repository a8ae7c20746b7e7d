"""Copy and style similarity to images the user names ("references"), beside the originality score.

    refs = load_references(["a.png", "b.jpg"], config, world)         # checked like the query
    sim = compare(judge_for(world, device, dtype), query, refs, {m: reconstructions}, copy_line=0.5)
    sim.references[0].copy, sim.references[0].style, sim.lengths[0].name

The score says how familiar an image is to a model; these say how close it is to particular works a
person names. Neither changes the score or the stop rule: they are computed after the analysis.

Copy similarity (DCR, Somepalli et al., CVPR 2023). Replication is measured on self-supervised
copy-detection features; DINO was among the three best of ten backbones. To catch a copied *part*,
each embedding is split into equal chunks and the score is the largest dot product of corresponding
chunks (`chunked_similarity`). Here the backbone is DINO ViT-B/16 (`facebook/dino-vitb16`, a
transformers `ViTModel`) and the embedding of an image is its last layer's CLS token followed by its
patch tokens averaged over a `COPY_GRID` x `COPY_GRID` grid of regions: (1 + grid^2) chunks of 768, the
whole image and each region, so corresponding chunks are the whole images and the same region of both.
Each chunk is L2-normalised (DCR normalises the whole vector before splitting, so that an image
against itself scores only its largest chunk's share, < 1; per chunk, every score is a cosine and an
image against itself scores 1). Range [-1, 1], higher = more alike; 1 = the same image (or a region of
it). DCR's line: on Stable Diffusion 1.88% of generations scored above 0.5, and above 0.5 the copies
were obvious (`AnalysisConfig.copy_line`, default 0.5). Not calibrated here on real weights.

Style similarity (CSD, Somepalli et al. 2024). CSD is a contrastive style descriptor trained on a CLIP
ViT-L (mAP@1 on WikiArt 64.6, against 59.4 for CLIP ViT-L's own features, 44-47 for DINO and 36 for
SSCD). Its released weights are not published on the Hugging Face Hub in a layout transformers loads,
so style similarity is the cosine of CLIP ViT-L/14 image embeddings (`openai/clip-vit-large-patch14`),
CSD's strongest baseline; every report says so (`Similarity.style_measure`). Range [-1, 1], higher = more
alike in style.

A world decides how its images are compared (`World.similarity` in `originality.world`): Stable
Diffusion uses the backbones above (`BackboneSimilarity`, the default); the shapes world compares layouts with its
detector and has no style score (`originality.shapes.judges.LayoutSimilarity`).

Models load lazily, once per (world, device, dtype) (`judge_for`), never at import; importing this
module loads no torch.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from PIL import Image

from .images import ImageInputError, centre_square, check_file_size, list_images, load_image
from .provenance import input_sha256
from .record import backbone_source
from .world import World
from .worlds import get_world

logger = logging.getLogger(__name__)

COPY_BACKBONE = "facebook/dino-vitb16"
STYLE_BACKBONE = "openai/clip-vit-large-patch14"
COPY_GRID = 2  # regions per side: chunks = the whole image + COPY_GRID ** 2 regions
REFERENCE_SIDE = 512  # references are kept (and stored with the run) at most this large


# --------------------------------------------------------------------------- DCR's rule


def chunked_similarity(a, b, chunks: int):
    """DCR's split product: the largest cosine of corresponding chunks.

    `a`: (n, d), `b`: (k, d) float tensors, d divisible by `chunks`. Each row is split into `chunks`
    equal, consecutive pieces of d / chunks; each piece is L2-normalised; the score of rows (i, j) is
    the largest dot product of piece c of a[i] and piece c of b[j] over c. Returns (n, k) in [-1, 1]:
    1 when some piece points the same way in both (an image against itself), higher = more alike.
    `chunks=1` is the plain cosine of the whole embeddings.
    """
    import torch  # noqa: PLC0415 - start-up: torch only when used

    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (n, d) and (k, d), got {tuple(a.shape)} and {tuple(b.shape)}")
    if chunks < 1 or a.shape[1] % chunks:
        raise ValueError(f"chunks must divide the embedding size {a.shape[1]}, got {chunks}")
    pa = torch.nn.functional.normalize(a.float().reshape(a.shape[0], chunks, -1), dim=-1)  # (n, c, d/c)
    pb = torch.nn.functional.normalize(b.float().reshape(b.shape[0], chunks, -1), dim=-1)  # (k, c, d/c)
    return torch.einsum("ncp,kcp->nkc", pa, pb).amax(dim=-1).clamp(-1.0, 1.0)  # (n, k)


# --------------------------------------------------------------------------- what a world compares with


@runtime_checkable
class SimilarityJudge(Protocol):
    """How one world compares images: copy similarity always, style similarity where it applies."""

    copy_measure: str  # for people: what the copy number is
    style_measure: str | None  # for people; None: style does not apply in this world
    style_note: str  # why style is what it is (which backbone, or why it does not apply)

    def copy(self, images: list[Image.Image], references: list[Image.Image]) -> list[list[float]]:
        """(len(images), len(references)) copy similarities; higher = more alike."""
        ...

    def style(self, images: list[Image.Image], references: list[Image.Image]) -> list[list[float]] | None:
        """(len(images), len(references)) style similarities, or None where style does not apply."""
        ...

    def backbones(self) -> dict[str, Any]:
        """{"copy": ..., "style": ...}: the models (Hub id and revision, or None) used, for the record."""
        ...


@dataclass
class BackboneSimilarity:
    """Copy similarity on DINO ViT-B/16 (DCR's chunked rule) and style similarity on CLIP ViT-L/14.

    Images: PIL, any size (each backbone's processor resizes them to 224 px). Scores in [-1, 1], higher
    = more alike (see the module docstring). The two models load lazily, once, on `device` in `dtype`
    (the caller's); the scores are computed in float32.
    """

    device: Any = "cpu"
    dtype: Any = None  # torch dtype of the backbones; None: float32
    copy_model_id: str = COPY_BACKBONE
    style_model_id: str = STYLE_BACKBONE
    grid: int = COPY_GRID
    batch_size: int = 16
    _copy_model: Any = field(init=False, default=None, repr=False)
    _copy_processor: Any = field(init=False, default=None, repr=False)
    _style_model: Any = field(init=False, default=None, repr=False)
    _style_processor: Any = field(init=False, default=None, repr=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    @property
    def copy_measure(self) -> str:
        return (f"DCR copy similarity: the largest cosine of corresponding chunks (the whole image and "
                f"{self.grid}x{self.grid} regions) of {self.copy_model_id} features")

    @property
    def style_measure(self) -> str:
        return f"style similarity: cosine of {self.style_model_id} image embeddings (CLIP ViT-L/14, CSD's baseline)"

    style_note: str = ("CSD's released weights are not on the Hugging Face Hub in a layout transformers loads, so "
                       "style is measured on CLIP ViT-L/14 image features, CSD's strongest baseline (WikiArt mAP@1 "
                       "59.4 against CSD's 64.6)")

    def _torch_dtype(self):
        import torch  # noqa: PLC0415 - start-up: torch only when used

        return self.dtype or torch.float32

    def load(self) -> None:
        """Read both backbones' weights now (once; later calls do nothing). The first comparison does it otherwise;
        a server calls it at start-up so that no visitor's run reads them (`originality.app.startup`)."""
        self._load_copy()
        self._load_style()

    def _load_copy(self) -> None:
        from transformers import AutoImageProcessor, ViTModel  # noqa: PLC0415 - start-up: transformers only when used

        with self._lock:
            if self._copy_model is None:
                logger.info("loading the copy-detection backbone %s", self.copy_model_id)
                model = _pretrained(ViTModel, self.copy_model_id, add_pooling_layer=False)
                self._copy_processor = _pretrained(AutoImageProcessor, self.copy_model_id)
                self._copy_model = model.to(device=self.device, dtype=self._torch_dtype()).eval()

    def _load_style(self) -> None:
        # The whole CLIPModel, as the Hub holds it: CLIPVisionModelWithProjection would build its projection from the
        # vision config's projection_dim, which need not be the checkpoint's, and re-initialise it at random.
        from transformers import CLIPImageProcessor, CLIPModel  # noqa: PLC0415 - start-up: transformers only when used

        with self._lock:
            if self._style_model is None:
                logger.info("loading the style backbone %s", self.style_model_id)
                model = _pretrained(CLIPModel, self.style_model_id)
                model.text_model = None  # only images are embedded here
                self._style_processor = _pretrained(CLIPImageProcessor, self.style_model_id)
                self._style_model = model.to(device=self.device, dtype=self._torch_dtype()).eval()

    def _batches(self, processor, images: list[Image.Image]):
        """Pixel batches of `images` as `processor` prepares them, on the device in the backbones' dtype."""
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            yield pixels.to(device=self.device, dtype=self._torch_dtype())

    def copy_embeddings(self, images: list[Image.Image]):
        """(n, (1 + grid^2) * hidden) float32: the CLS token, then the patch tokens averaged per region."""
        import torch  # noqa: PLC0415 - start-up: torch only when used

        self._load_copy()
        out = []
        with torch.no_grad():
            for pixels in self._batches(self._copy_processor, images):
                tokens = self._copy_model(pixel_values=pixels).last_hidden_state.float()  # (b, 1 + h*w, hidden)
                cls, patches = tokens[:, 0], tokens[:, 1:]
                side = int(round(patches.shape[1] ** 0.5))
                grid = patches.reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)  # (b, hidden, h, w)
                cells = torch.nn.functional.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)
                out.append(torch.cat([cls[:, None], cells], dim=1).flatten(1).cpu())  # (b, (1 + g^2) * hidden)
        return torch.cat(out)

    def style_embeddings(self, images: list[Image.Image]):
        """(n, projection) float32 CLIP image embeddings."""
        import torch  # noqa: PLC0415 - start-up: torch only when used

        self._load_style()
        with torch.no_grad():
            return torch.cat([_tensor(self._style_model.get_image_features(pixel_values=p)).float().cpu()
                              for p in self._batches(self._style_processor, images)])

    def copy(self, images: list[Image.Image], references: list[Image.Image]) -> list[list[float]]:
        if not images or not references:
            return [[] for _ in images]
        embeddings = self.copy_embeddings(list(images) + list(references))
        n = len(images)
        return chunked_similarity(embeddings[:n], embeddings[n:], 1 + self.grid ** 2).tolist()

    def style(self, images: list[Image.Image], references: list[Image.Image]) -> list[list[float]]:
        if not images or not references:
            return [[] for _ in images]
        embeddings = self.style_embeddings(list(images) + list(references))
        n = len(images)
        return chunked_similarity(embeddings[:n], embeddings[n:], 1).tolist()

    def backbones(self) -> dict[str, Any]:
        return {"copy": backbone_source(self.copy_model_id), "style": backbone_source(self.style_model_id)}


def _tensor(output):
    """`get_image_features`' tensor (transformers 5 may return a model output holding it as `pooler_output`)."""
    return output if hasattr(output, "float") else output.pooler_output


def _pretrained(cls, model_id: str, **kwargs):
    """`cls.from_pretrained(model_id)`, with a message for people when the weights are not here."""
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"could not load {model_id} for the similarity to the reference images ({err}); it is "
                           "downloaded from the Hugging Face Hub on first use, which needs network access") from err


_JUDGES: dict[tuple, SimilarityJudge] = {}
_JUDGES_LOCK = threading.Lock()


def judge_for(world: World | str, device: Any = "cpu", dtype: Any = None) -> SimilarityJudge:
    """The world's judge (`World.similarity`; None: `BackboneSimilarity`), built once per (world, device, dtype);
    its models load on first use. `world`: the world, or its name (a report's `model["world"]`)."""
    spec = world if isinstance(world, World) else get_world(world)
    key = (spec.name, str(device), str(dtype))
    with _JUDGES_LOCK:
        if key not in _JUDGES:
            build = spec.similarity or BackboneSimilarity
            _JUDGES[key] = build(device=device, dtype=dtype)
        return _JUDGES[key]


# --------------------------------------------------------------------------- the references


@dataclass(frozen=True)
class Reference:
    """One image the user named: its name for people, the image (RGB, at most REFERENCE_SIDE px) and
    `provenance.input_sha256` of the file as given. Picklable."""

    name: str
    image: Image.Image
    source: dict = field(default_factory=dict)


def expand_references(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given, folders as their image files (by extension, sorted, not recursive); a missing path is an
    error naming it (ValueError)."""
    out: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise ValueError(f"reference folder {given}: no image files in it")
            out.extend(str(p) for p in found)
        elif path.exists():
            out.append(str(path))
        else:
            raise ValueError(f"reference {given}: no such file or folder")
    return out


def reference_name(source: Any, index: int) -> str:
    """A path's file name; "reference N" (from 1) for anything else."""
    return Path(source).name if isinstance(source, (str, os.PathLike)) else f"reference {index + 1}"


def load_references(sources: Sequence[Any] | None, config, world=None, *, max_bytes: int | None = None
                    ) -> list[Reference]:
    """The references, each read by the query's own input path (`images.load_image`) and, with `world`, checked
    by the world as the query is (`World.check_query`, unless `config.world_check` is "off"); at most
    `config.max_references`. A `Reference` is kept as it is.

    `max_bytes`: a server's own upload limit (`images.check_file_size`). Raises `images.ImageInputError` whose
    message names the reference by its file name (never the folder it was uploaded to), or ValueError when there
    are more than `config.max_references`. None or [] gives [] (nothing else happens).
    """
    sources = [s for s in (sources or []) if s is not None]
    if len(sources) > config.max_references:
        raise ValueError(f"too many reference images: {len(sources)} given, at most {config.max_references} "
                         "(max_references); name fewer")
    world_check = config.world_check == "on"
    refs = []
    for i, source in enumerate(sources):
        if isinstance(source, Reference):  # already loaded and checked (e.g. by a shell before the model loads)
            refs.append(source)
            continue
        name = reference_name(source, i)
        try:
            if max_bytes is not None:
                check_file_size(source, max_bytes)
            image = load_image(source)
            problem = world.check_query(centre_square(image)) if world is not None and world_check else None
            if problem:
                raise ImageInputError(problem)
        except ImageInputError as err:
            message = str(err).replace(str(source), name) if isinstance(source, (str, os.PathLike)) else str(err)
            raise ImageInputError(f"reference image {name!r}: {message}") from err
        image.thumbnail((REFERENCE_SIDE, REFERENCE_SIDE), Image.Resampling.LANCZOS)
        refs.append(Reference(name, image, input_sha256(source)))
    return refs


# --------------------------------------------------------------------------- the result


@dataclass
class ReferenceScore:
    """The query against one reference: copy in [-1, 1] (the shapes world: [0, 1]), style in [-1, 1] or None."""

    name: str
    copy: float
    style: float | None
    copied: bool  # copy >= the copy line


@dataclass
class NearestReference:
    """For one token length: the reference its reconstructions are nearest to (largest mean copy similarity
    over the reconstructions), those means, and the query's own copy similarity to that reference."""

    num_tokens: int
    reference: int  # index into Similarity.references
    name: str
    copy: float  # mean over the reconstructions
    style: float | None
    query_copy: float  # the query's copy similarity to the same reference

    @property
    def drifts(self) -> bool:
        """The reconstructions are closer to the reference than the query itself is."""
        return self.copy > self.query_copy


@dataclass
class Similarity:
    """Copy and style similarity of one analysis' query (and reconstructions) to the user's references.

    `error`: why nothing could be measured (e.g. the backbones could not be loaded); the score stands.
    `images`: the references as compared (kept with the run: `references/reference_{i}.png`).
    """

    references: list[ReferenceScore]
    lengths: list[NearestReference]
    copy_line: float
    copy_measure: str
    style_measure: str | None
    style_note: str
    backbones: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    images: list[Image.Image] = field(default_factory=list, repr=False)

    @property
    def nearest(self) -> int | None:
        """Index of the reference with the largest copy similarity to the query (None: none measured)."""
        if not self.references:
            return None
        return max(range(len(self.references)), key=lambda i: self.references[i].copy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "copy_line": self.copy_line, "copy_measure": self.copy_measure, "style_measure": self.style_measure,
            "style_note": self.style_note, "backbones": self.backbones, "error": self.error,
            "nearest": self.nearest,
            "references": [vars(r).copy() for r in self.references],
            "lengths": [{**vars(n), "drifts": n.drifts} for n in self.lengths],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], images: list[Image.Image] | None = None) -> "Similarity":
        return cls(
            references=[ReferenceScore(**r) for r in data.get("references", [])],
            lengths=[NearestReference(**{k: v for k, v in n.items() if k != "drifts"})
                     for n in data.get("lengths", [])],
            copy_line=data["copy_line"], copy_measure=data["copy_measure"], style_measure=data.get("style_measure"),
            style_note=data.get("style_note", ""), backbones=data.get("backbones", {}), error=data.get("error", ""),
            images=list(images or []))

    def lines(self) -> list[str]:
        """Plain sentences for people: one per reference, one per token length, and what style is."""
        if self.error:
            return [f"similarity to the references not measured: {self.error}"]
        out = []
        for r in self.references:
            style = "style n/a" if r.style is None else f"style {r.style:.3f}"
            flag = f" (at or above the copy line {self.copy_line:g})" if r.copied else ""
            out.append(f"reference {r.name}: copy {r.copy:.3f}{flag}, {style}")
        for n in self.lengths:
            style = "" if n.style is None else f", style {n.style:.3f}"
            toward = "closer to it than the query" if n.drifts else "not closer to it than the query"
            out.append(f"m={n.num_tokens}: reconstructions nearest to {n.name} (copy {n.copy:.3f}{style}; the query "
                       f"{n.query_copy:.3f}: {toward})")
        if self.style_measure is None:
            out.append(f"style: {self.style_note}")
        return out


def compare(judge: SimilarityJudge, query: Image.Image, references: Sequence[Reference],
            reconstructions: dict[int, list[Image.Image]], *, copy_line: float) -> Similarity:
    """The query's copy and style similarity to each reference, and per token length m (`reconstructions`:
    m -> that length's images) the reference its reconstructions are nearest to. Each image is embedded once.

    A judge that cannot load its models gives a `Similarity` with `error` set (the analysis' score stands).
    """
    names, images = [r.name for r in references], [r.image for r in references]
    base = dict(copy_line=copy_line, copy_measure=judge.copy_measure, style_measure=judge.style_measure,
                style_note=judge.style_note, images=images)
    lengths = sorted(m for m, ims in reconstructions.items() if ims)
    pool = [query] + [im for m in lengths for im in reconstructions[m]]
    try:
        copy = judge.copy(pool, images)  # (1 + reconstructions, references)
        style = judge.style(pool, images)
        backbones = judge.backbones()
    except RuntimeError as err:
        logger.warning("similarity to the references not measured: %s", err)
        return Similarity(references=[], lengths=[], error=str(err), **base)
    refs = [ReferenceScore(name, copy[0][j], None if style is None else style[0][j], copy[0][j] >= copy_line)
            for j, name in enumerate(names)]
    nearest, row = [], 1
    for m in lengths:
        rows = range(row, row + len(reconstructions[m]))
        row += len(reconstructions[m])

        def mean(table, j):
            return sum(table[i][j] for i in rows) / len(rows)
        j = max(range(len(names)), key=lambda k: mean(copy, k))
        nearest.append(NearestReference(m, j, names[j], mean(copy, j), None if style is None else mean(style, j),
                                        copy[0][j]))
    return Similarity(references=refs, lengths=nearest, backbones=backbones, **base)
