"""The repair target: class pairs (confusion) or class triplets (bias).

"Repairing Group-Level Errors for DNNs Using Weighted Regularization" (WR), section 2.2:
a *confusion* target is a pair {A, B} whose mutual confusion should drop; a *bias* target is a
triplet (A, B, C) whose cd = |error(A, C) - error(B, C)| should drop (A the positive, B the
negative, C the anchor). Several pairs (or several triplets) form one target; pairs and triplets
never mix. ``Y_target`` is every class named.

One :class:`Target` travels between the pages, the command line, the repair methods and the
store (``to_dict`` / ``from_dict``), always with the class names it indexes into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

KINDS = ("confusion", "bias")


@dataclass(frozen=True)
class Target:
    """Pairs or triplets of class indices into ``class_names``.

    Attributes:
        groups: ``((a, b), ...)`` or ``((positive, negative, anchor), ...)`` class indices.
        class_names: the K class names of the workspace.
    """

    groups: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...]

    def __post_init__(self):
        groups = tuple(tuple(int(c) for c in g) for g in self.groups)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        k = len(self.class_names)
        if not groups:
            raise ValueError("no targets given (use A,B or A,B,C; separate several with ';')")
        if {len(g) for g in groups} not in ({2}, {3}):
            raise ValueError("targets must be all pairs (A,B) or all triplets (positive,negative,anchor)")
        for g in groups:
            if len(set(g)) != len(g):
                raise ValueError(f"{self._text(g)!r} repeats a class")
            if not all(0 <= c < k for c in g):
                raise ValueError(f"target {g} names a class outside [0, {k})")

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, class_names: Sequence[str]) -> "Target":
        """``"A,B"``, ``"A,B;C,D"`` or ``"P,N,C"`` (names, or indices when no class has that name).

        Raises:
            ValueError: an unknown class (the message lists valid names), a repeated class,
                a chunk that is neither a pair nor a triplet, or pairs mixed with triplets.
        """
        names = tuple(class_names)
        index = {name: k for k, name in enumerate(names)}
        groups = []
        for chunk in [c for c in str(text).split(";") if c.strip()]:
            ids = []
            for name in [n.strip() for n in chunk.split(",") if n.strip()]:
                if name in index:
                    ids.append(index[name])
                elif name.isdigit() and int(name) < len(names):
                    ids.append(int(name))
                else:
                    shown = ", ".join(names[:20]) + ("…" if len(names) > 20 else "")
                    raise ValueError(f"unknown class {name!r}; valid classes: {shown}")
            if len(ids) not in (2, 3) or len(set(ids)) != len(ids):
                raise ValueError(f"{chunk.strip()!r} must name 2 (pair) or 3 (triplet) different classes")
            groups.append(tuple(ids))
        if groups and len({len(g) for g in groups}) > 1:
            raise ValueError("targets must be all pairs or all triplets")
        return cls(tuple(groups), names)

    @classmethod
    def from_names(cls, names: Sequence[Sequence[str]], class_names: Sequence[str]) -> "Target":
        """From ``[["cat", "dog"], ...]`` (the stored form)."""
        return cls.parse(";".join(",".join(str(n) for n in g) for g in names), class_names)

    @classmethod
    def from_dict(cls, data: dict | None, class_names: Sequence[str]) -> "Target | None":
        """From :meth:`to_dict`'s form; None when ``data`` is empty or names unknown classes."""
        if not data or not data.get("targets"):
            return None
        try:
            return cls.from_names(data["targets"], class_names)
        except ValueError:
            return None

    # ---- views ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """"confusion" (pairs) or "bias" (triplets)."""
        return "confusion" if len(self.groups[0]) == 2 else "bias"

    @property
    def classes(self) -> list[int]:
        """``Y_target``: every class named, sorted (WR 3.2)."""
        return sorted({c for g in self.groups for c in g})

    @property
    def names(self) -> list[list[str]]:
        return [[self.class_names[c] for c in g] for g in self.groups]

    @property
    def text(self) -> str:
        """The parseable form, e.g. ``"cat,dog; ship,truck"``."""
        return "; ".join(self._text(g) for g in self.groups)

    @property
    def label(self) -> str:
        """A display form: ``cat / dog`` for pairs, ``cat / dog | fox`` for triplets."""
        if self.kind == "confusion":
            return "; ".join(" / ".join(n) for n in self.names)
        return "; ".join(f"{p} / {n} | {c}" for p, n, c in self.names)

    @property
    def error_name(self) -> str:
        return "cd" if self.kind == "bias" else "confusion"

    def _text(self, group) -> str:
        return ",".join(self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in group)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "targets": self.names}

    def __str__(self) -> str:
        return self.text
