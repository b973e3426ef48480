"""The maintainers' tooling shared by the tests, the scripts and the benchmarks: ComfyUI boot, the server harness and
its test-only nodes, the frontend driver, tiny-model factories, the workflow-graph library and the recorded node
lists. Never imported by the pack itself (``__init__.py``, ``nodes/``, ``standin_core/``), and not in its wheel.

The independent oracles (the naive Wan, the paper's joint sequence, the official recipe, the tolerance) stay in
``tests/support``: they are what the pack is checked against.
"""
