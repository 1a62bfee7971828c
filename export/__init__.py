"""srdeploy export: PyTorch -> ONNX (DESIGN.md §3, §4).

- ``export.onnx``: ``python -m export.onnx`` and ``export_model(model, path, mode=, precision=, size=)``
- ``export.ops_plugin``: the srdeploy::* custom nodes (emitters, ONNX schemas from models.ops.contract)
- ``export.ops_onnx``: the standard-op decompositions of the custom ops (``--ops onnx``)
- ``export.cleanup``: onnx-graphsurgeon clean-up, checks, TensorRT-parser checks
"""
