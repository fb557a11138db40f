"""Export to ONNX (:mod:`.onnx_export`) and running an exported model with ONNX Runtime
(:mod:`.onnx_runtime`). Needs the ``deploy`` extra: ``pip install -e .[deploy]``."""
