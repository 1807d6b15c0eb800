"""How default positions are numbered: one record per rule, looked up by its name.

A table set's ``position_rule`` (``EmbeddingTables(position_rule=...)``) and a family's
``positions`` (:mod:`.families`) name one :class:`PositionRule` of :data:`RULES`; the code
that numbers, checks and differentiates positions reads the record's fields, never the
name: :mod:`._table_arrays` (the tables' checks), :mod:`.validate.prepare` and
:mod:`.validate.positions` (the host numbering of default positions), :mod:`.api` (the
padding row's gradient), :mod:`.checkpoint` (a checkpoint's padding index) and
:mod:`.cuda.tables` (which rules the GPU kernels apply).

Two kinds of numbering exist, and a new rule of either kind is one record here:

- sequential (``padding=False``): ``past_length + offset .. past_length + offset + seq - 1``
  for every sequence (BERT's ``"absolute"``: offset 0);
- after the padding (``padding=True``): RoBERTa's rule, numbered from the ids: a token's
  position is ``padding_idx + past_length +`` the count of non-padding tokens up to and
  including it, a padding token's is ``padding_idx`` (transformers'
  ``create_position_ids_from_input_ids``). The rule needs ``padding_idx``, and the position
  table's ``padding_idx`` row is a padding row: it gets no gradient.

A rule that numbers in another way still (from the attention mask, say) is a new kind: a
field here, its host numbering in :mod:`.validate.positions` read from that field, and the
drop-in's numbering in torch (:mod:`.nn.module`). torch is never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PositionRule:
    """One way of numbering the positions of a call that gives no ``position_ids``."""

    name: str  # the tables' position_rule argument, as users write it
    title: str  # what messages call it
    padding: bool = False  # numbered after the padding tokens (module docstring)
    offset: int = 0  # sequential rules: the first position is past_length + offset
    on_device: bool = False  # the GPU kernels number by it (cuda/tables.py takes the tables)

    def check_tables(self, padding_idx: int | None, has_position: bool, max_positions: int):
        """Refuse tables this rule cannot number into (a ValueError naming the rule)."""
        if self.padding and padding_idx is None:
            raise ValueError(f"position_rule={self.name!r} needs padding_idx.")
        if self.padding and (not has_position or padding_idx >= max_positions):
            raise ValueError(
                f"position_rule={self.name!r} needs a position table with a row for "
                f"padding_idx={padding_idx} (max_positions is {max_positions})."
            )
        if self.offset and has_position and self.offset >= max_positions:
            raise ValueError(
                f"position_rule={self.name!r} numbers from {self.offset}; it needs a position "
                f"table of more than {self.offset} rows (max_positions is {max_positions})."
            )

    def origin(self, past_length: int) -> str:
        """How a default position came about, for an IndexError's message."""
        rule = f", position_rule={self.name!r}" if self.offset else ""
        return f"default, past_length={past_length}{rule}"


ABSOLUTE = PositionRule("absolute", "BERT's absolute positions", on_device=True)
AFTER_PADDING = PositionRule("after_padding", "RoBERTa's position rule", padding=True)

RULES = {rule.name: rule for rule in (ABSOLUTE, AFTER_PADDING)}
POSITION_RULES = tuple(RULES)  # the names, as messages list them


def rule_named(name) -> PositionRule:
    """The rule called ``name``, or a ValueError listing the rules."""
    try:
        return RULES[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        message = f"position_rule is {name!r}; it must be one of {POSITION_RULES}."
        raise ValueError(message) from None
