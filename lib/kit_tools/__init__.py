"""Tools around the kit, kept out of its package (``siglip_adapter``): what the pipeline, the tests
and the benchmarks use to make and check things, never what a run computes.

- ``tidy``: an executed notebook made comparable between runs (``python -m kit_tools.tidy``,
  after each papermill stage and ``make notebook-outputs``);
- ``digits``: the offline ``digits`` dataset as a PNG class-folder tree, from scikit-learn's
  bundled copy (``python -m kit_tools.digits OUT``, the ``digits_data`` stage);
- ``tiny_models``: tiny random-weight models with the real hub architectures and tokenizers, and
  a throwaway hub-profile project over them (``python -m kit_tools.tiny_models``; the tests).
"""
