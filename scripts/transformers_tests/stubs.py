"""Stand-ins for the two test packages test_modeling_common.py imports that transformers'
source distribution does not ship (its exporters and generation packages): empty mixins, so
ModelTesterMixin imports; the export and generation tests they would add do not run."""

STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
}
