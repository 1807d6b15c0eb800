"""The drop-in's call signature: the replaced module's own, bound as Python binds it."""

from __future__ import annotations

import inspect


# The call of transformers' BertEmbeddings (5.x: cache_length, 4.x: past_key_values_length).
def _bert_call(
    input_ids=None,
    token_type_ids=None,
    position_ids=None,
    inputs_embeds=None,
    past_key_values_length=0,
    cache_length=None,
):
    pass


BERT_SIGNATURE = inspect.signature(_bert_call)
_UNSET = object()  # an argument the call did not give


class Binder:
    """``signature.bind(*args, **kwargs).arguments`` (the arguments given, by name) as a plain
    Python function of that signature, which torch.compile traces (``Signature.bind`` makes
    dynamo break the graph of a whole model: it reads a mapping proxy). The same binding
    and, for a call that does not fit, a TypeError as Python's. Pickled as its signature.
    """

    def __init__(self, signature: inspect.Signature):
        self.signature = signature
        header, body = [], []
        kinds = inspect.Parameter
        parameters = list(signature.parameters.values())
        last_positional_only = max(
            (i for i, p in enumerate(parameters) if p.kind is kinds.POSITIONAL_ONLY), default=-1
        )
        for i, parameter in enumerate(parameters):
            name, kind = parameter.name, parameter.kind
            if kind is kinds.KEYWORD_ONLY and not any(h.startswith("*") for h in header):
                header.append("*")
            if kind is kinds.VAR_POSITIONAL or kind is kinds.VAR_KEYWORD:
                header.append(("*" if kind is kinds.VAR_POSITIONAL else "**") + name)
                body.append(f"    if {name}:\n        _bound[{name!r}] = {name}")  # not empty
                continue
            header.append(name if parameter.default is parameter.empty else f"{name}=_UNSET")
            body.append(f"    if {name} is not _UNSET:\n        _bound[{name!r}] = {name}")
            if i == last_positional_only:
                header.append("/")
        source = "def bind({}):\n    _bound = {{}}\n{}\n    return _bound\n".format(
            ", ".join(header), "\n".join(body)
        )
        namespace = {"_UNSET": _UNSET}
        exec(source, namespace)  # source built from the parameters' names only
        self._bind = namespace["bind"]

    def __call__(self, *args, **kwargs) -> dict:
        return self._bind(*args, **kwargs)

    def __reduce__(self):
        return type(self), (self.signature,)

    def __deepcopy__(self, memo):
        return self


def binder_of(module) -> Binder:
    """The binder of ``module``'s forward: its own signature, less ``self``."""
    signature = inspect.signature(type(module).forward)
    return Binder(signature.replace(parameters=list(signature.parameters.values())[1:]))
